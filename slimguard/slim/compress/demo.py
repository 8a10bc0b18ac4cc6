"""Demo step for LLMLingua-2 (Pan et al., 2024): compress held-out essays and dialogue transcripts
planted with short facts, and count the facts that survive 3x compression.

Reuses the trained compressor in ~/.cache/slimguard/compressors/default (made once by
`slimguard compress distill` + `slimguard compress train`, see docs/compress.md and the Makefile);
it does not train one. Every prompt is built from documents the compressor never saw (the held-out
tail of each source), with facts planted at sentence ends; a fact is retained when its answer word
is still in the compressed prompt. Compared at the same rate with random word drop (the floor any
learned compressor must beat) and, in full mode, Selective Context (SmolLM2 self-information).
One prompt also goes through the ``compress run`` verb, so its run folder is what the CLI writes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_PEOPLE = ["Marta", "Idris", "Sven", "Keiko", "Tomas", "Aylin", "Ravi", "Odile"]
_CITIES = ["Lisbon", "Tbilisi", "Quito", "Oslo", "Nagoya", "Tunis", "Riga", "Perth"]
_THINGS = ["teapot", "mailbox", "piano", "toolbox", "birdcage", "wardrobe"]
_TAGS = ["cobalt", "granite", "saffron", "juniper", "amber", "falcon", "maple", "orchid"]
_TEMPLATES = [  # (sentence, answer slot): facts a reader could be asked about
    ("The secret code for the {T} vault is {N}.", "N"),
    ("{P} keeps the spare key inside the {O}.", "O"),
    ("The meeting with {P} was moved to {C}.", "C"),
    ("The {T} project is led by {P}.", "P"),
]


@dataclass
class Planted:
    """A prompt and the facts planted in it."""

    text: str
    source: str
    facts: list[tuple[str, str]]  # (sentence, answer)


def _fact(rng: np.random.Generator) -> tuple[str, str]:
    s, slot = _TEMPLATES[int(rng.integers(len(_TEMPLATES)))]
    v = {"P": str(rng.choice(_PEOPLE)), "C": str(rng.choice(_CITIES)), "O": str(rng.choice(_THINGS)),
         "T": str(rng.choice(_TAGS)), "N": str(int(rng.integers(10000, 99999)))}
    return s.format(**v), v[slot]


def planted_prompts(n_prompts: int, chars: int, facts_per_prompt: int, seed: int = 0) -> list[Planted]:
    """Prompts cut from held-out documents of both sources, each with facts at distinct sentence ends."""
    from .distill import split_documents

    rng = np.random.default_rng(seed)
    held = {s: split_documents(s, 8)[1] for s in ("pg-essays", "friends")}
    out = []
    for i in range(n_prompts):
        src = ("pg-essays", "friends")[i % 2]
        doc = held[src][(i // 2) % len(held[src])]
        start = int(rng.integers(0, max(1, len(doc) - chars)))
        body = doc[start: start + chars]
        body = body[body.find("\n") + 1 if src == "friends" else body.find(". ") + 2:]  # start on a boundary
        ends = [m.end() for m in re.finditer(r"(?<=[.!?])\s+|\n", body)][:-1]
        at = sorted(rng.choice(ends, size=min(facts_per_prompt, len(ends)), replace=False).tolist())
        facts, pieces, prev, used = [], [], 0, set()
        for p in at:
            f = _fact(rng)
            while f[1] in used:  # one answer per prompt, so retention of one fact is not another's
                f = _fact(rng)
            used.add(f[1])
            facts.append(f)
            pieces += [body[prev:p], f[0] + (" " if src == "pg-essays" else "\n")]
            prev = p
        out.append(Planted("".join(pieces) + body[prev:], src, facts))
    return out


def retained(text: str, answer: str) -> bool:
    return re.search(r"\b" + re.escape(answer.lower()) + r"\b", text.lower()) is not None


def demo_step(quick: bool, out_dir: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ...core.commands import execute
    from ...report.html import esc, figure, fold, table
    from ...report.step import StepResult, SummaryRow, rate_text
    from .baselines import RandomDrop, SelectiveContext
    from .compressor import PromptCompressor
    from .config import CompressConfig
    from .render import _segments

    n_prompts, chars, per = (6, 3500, 3) if quick else (10, 5000, 4)
    prompts = planted_prompts(n_prompts, chars, per, seed=0)
    rates = [0.5, 0.33, 0.2]
    pc = PromptCompressor("default")
    methods: dict[str, list[list[str]]] = {"slimguard (LLMLingua-2, MiniLM)": [], "random drop": []}
    achieved: list[list[float]] = []
    rnd = RandomDrop(0)
    sc = None
    if not quick:
        from ...core.models import load_causal_lm

        sc = SelectiveContext(load_causal_lm("smollm2-135m"))
        methods["Selective Context (SmolLM2)"] = []
    post_ms = []
    for p in prompts:
        res = pc.compress_rates(p.text, CompressConfig(), rates)
        methods["slimguard (LLMLingua-2, MiniLM)"].append([r.compressed_prompt for r in res])
        achieved.append([r.rate for r in res])
        post_ms.append(res[1].post_s * 1000)
        methods["random drop"].append([r.compressed_prompt for r in rnd.compress_rates(p.text, rates)])
        if sc is not None:
            methods["Selective Context (SmolLM2)"].append([r.compressed_prompt
                                                           for r in sc.compress_rates(p.text, rates)])
    n_facts = sum(len(p.facts) for p in prompts)

    def kept(method: str, ri: int) -> int:
        return sum(retained(outs[ri], a) for p, outs in zip(prompts, methods[method]) for _, a in p.facts)

    ours, rand = "slimguard (LLMLingua-2, MiniLM)", "random drop"
    rows = []
    for ri, r in enumerate(rates):
        row = {"requested rate": r, "achieved rate (mean, cl100k)": round(float(np.mean([a[ri] for a in achieved])), 3)}
        for m in methods:
            row[f"facts kept: {m}"] = f"{kept(m, ri)}/{n_facts}"
        rows.append(row)
    k_ours, k_rand = kept(ours, 1), kept(rand, 1)
    rate_err = float(np.max([abs(a[1] - 0.33) for a in achieved]))
    summary = [SummaryRow("planted facts kept at 3x (rate 0.33)", round(k_ours / n_facts, 3), n=n_facts,
                          baseline=round(k_rand / n_facts, 3),
                          baseline_name="random word drop, same rate, same prompts")]
    if sc is not None:
        k_sc = kept("Selective Context (SmolLM2)", 1)
        summary.append(SummaryRow("planted facts kept at 3x vs the LM-based peer", round(k_ours / n_facts, 3),
                                  n=n_facts, baseline=round(k_sc / n_facts, 3),
                                  baseline_name="Selective Context (SmolLM2 self-information), same rate"))
    summary += [SummaryRow("largest |achieved - requested| rate at 0.33", round(rate_err, 4), n=len(prompts),
                           baseline=0.0, baseline_name="the requested rate (0 = exact)"),
                SummaryRow("post-processing ms per prompt at 3x (median)", round(float(np.median(post_ms)), 2),
                           n=len(prompts), no_baseline="the speed comparison with the llmlingua package runs in "
                                                       "bench compress (canonical numbers above), on a quiet machine")]
    # one prompt through the verb the CLI runs: its run folder holds compressed.txt and the kept/dropped view
    ex = prompts[0]
    verb = execute("compress run", CompressConfig(rate=0.33), run="compress-run", root=out_dir, overwrite=True,
                   progress=False, command_line="slimguard compress run --rate 0.33", text=ex.text)
    full = pc.compress(ex.text, CompressConfig(rate=0.33))
    segs = list(_segments(full))
    shown, words = [], 0
    for piece, kind in segs:  # the first ~120 words as the visible preview
        shown.append(esc(piece) if kind == "gap" else f'<span class="{kind}">{esc(piece)}</span>')
        words += kind != "gap"
        if words >= 120:
            break
    all_html = "".join(esc(pc_) if k == "gap" else f'<span class="{k}">{esc(pc_)}</span>' for pc_, k in segs)
    fig, ax = plt.subplots(figsize=(5.5, 3))
    for m, style in zip(methods, ("o-", "s--", "^-.")):
        ax.plot(rates, [kept(m, i) / n_facts for i in range(len(rates))], style, label=m)
    ax.set(xlabel="requested rate (kept fraction of tokens)", ylabel=f"planted facts kept (n={n_facts})",
           ylim=(0, 1.05))
    ax.invert_xaxis()
    ax.legend(fontsize=8)
    facts_html = "".join(f"<li>{esc(s)} <small>({'kept' if retained(full.compressed_prompt, a) else 'dropped'})"
                         "</small></li>" for s, a in ex.facts)
    html = (f"<p>{len(prompts)} prompts of about {chars} characters from held-out Paul Graham essays and Friends "
            f"transcripts (documents the compressor was not trained on), {per} facts planted in each "
            f"({n_facts} in all); compressor <code>{esc(pc.path)}</code>.</p>" + table(rows) + figure(fig)
            + f"<h3>One prompt through <code>slimguard compress run --rate 0.33</code></h3>"
              f"<p>{esc(verb.metrics['origin_tokens'])} -> {esc(verb.metrics['compressed_tokens'])} cl100k tokens "
              f"(rate {verb.metrics['achieved_rate']:.3f}); run folder <code>{esc(verb.path)}</code>. "
              f"Its planted facts:</p><ul>{facts_html}</ul>"
            + "<p>Kept words highlighted, dropped words struck out:</p>"
            + fold(f'<pre>{"".join(shown)} ...</pre>', f"<pre>{all_html}</pre>",
                   f"{sum(k != 'gap' for _, k in segs)} words"))
    caveat = (f"{n_facts} facts: one fact moves a rate by {1 / n_facts:.2f}, so differences under about "
              f"{2 / n_facts ** 0.5:.2f} are within noise; the canonical benchmark scores more prompts per length "
              "and three seeds.")
    return StepResult(
        "Prompt compression (LLMLingua-2)", summary, html,
        goal="A learned keep/drop tagger should compress a prompt to the requested share of tokens while keeping "
             "the words that carry information, clearly more of them than random word drop at the same rate.",
        shows=f"At 3x it kept {rate_text(k_ours, n_facts)} planted facts against {rate_text(k_rand, n_facts)} "
              f"for random drop at the same rate, on held-out documents.",
        caveat=caveat, canonical=("compress",),
        featured=("retention_at_3x", "retention_gain_vs_random_at_3x", "retention_gain_vs_selective_context_at_3x"))
