"""Demo step for LLMLingua-2 (Pan et al., 2024): compress a held-out essay with a planted fact at 3x.

Reuses the trained compressor in ~/.cache/slimguard/compressors/default (made by
`slimguard compress distill` + `slimguard compress train`, see docs/compress.md); it does
not train one, because distillation and training take tens of minutes on a CPU. Compared
side by side with random word drop and (full mode) Selective Context.
"""

from __future__ import annotations

from pathlib import Path


def demo_step(quick: bool, out_dir: Path):
    import numpy as np

    from ...report.step import StepResult
    from ...report.html import esc, figure, table
    from .baselines import RandomDrop, SelectiveContext
    from .compressor import PromptCompressor
    from .config import CompressConfig
    from .distill import split_documents
    from .render import html_words

    pc = PromptCompressor("default")
    doc = split_documents("pg-essays", 8)[1][0]
    fact, answer = "The secret code for the cobalt vault is 48213.", "48213"
    cut = doc.find(". ", len(doc) // 5) + 2
    text = doc[:cut] + fact + " " + doc[cut: cut + (3000 if quick else 9000)]
    rates = [0.5, 0.33, 0.2]
    res = pc.compress_rates(text, CompressConfig(), rates)
    rows = []
    methods = {"slimguard (LLMLingua-2, MiniLM)": [r.compressed_prompt for r in res]}
    rnd = RandomDrop(0).compress_rates(text, rates)
    methods["random drop"] = [r.compressed_prompt for r in rnd]
    if not quick:
        from ...core.models import load_causal_lm

        methods["Selective Context (SmolLM2)"] = [r.compressed_prompt for r in
                                                  SelectiveContext(load_causal_lm("smollm2-135m")).compress_rates(text, rates)]
    for r, rr in zip(rates, res):
        row = {"rate": r, "achieved rate": round(rr.rate, 3), "model ms": round(rr.model_s * 1000, 1),
               "post ms": round(rr.post_s * 1000, 2)}
        for name, outs in methods.items():
            row[f"fact kept: {name}"] = answer in outs[rates.index(r)]
        rows.append(row)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 3))
    ax.plot(rates, [r.rate for r in res], "o-", label="achieved (slimguard)")
    ax.plot(rates, rates, "k--", lw=0.8, label="requested")
    ax.set_xlabel("requested rate")
    ax.set_ylabel("kept cl100k tokens / original")
    ax.legend()
    mid = res[1]
    from ...core.runs import atomic_write_text

    atomic_write_text(Path(out_dir) / "compressed_3x.txt", mid.compressed_prompt)
    summary = [{"metric": "achieved rate at 0.33 (cl100k)", "slimguard": round(mid.rate, 3), "baseline": "-"},
               {"metric": "planted fact kept at 3x", "slimguard": answer in mid.compressed_prompt,
                "baseline": f"random: {answer in methods['random drop'][1]}"},
               {"metric": "post-processing ms at 3x", "slimguard": round(mid.post_s * 1000, 2),
                "baseline": "see bench compress"}]
    html = (f"<p>{esc(len(text))} characters, {mid.origin_tokens} cl100k tokens; planted fact: "
            f"<code>{esc(fact)}</code>. Compressor: <code>{esc(pc.path)}</code>.</p>" + table(rows) +
            figure(fig) + "<h3>Kept (green) and dropped words at rate 0.33</h3>" + html_words(mid))
    del np
    return StepResult("Prompt compression (LLMLingua-2)", summary, html)
