"""Demo step for the backdoor defences: ONION (Qi et al. 2021) on real Rotten Tomatoes
sentences carrying a BadNets or a PuncAttack trigger, with the words it deletes struck
through, plus the attack x defence heatmap from ``slimguard bench defence`` when it exists.

No victim is trained here (that is the attack step's job); ``quick`` scores 6 sentences
with SmolLM2, the full step 18.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ....report import html as H


def _highlight(ws, threshold: float, trigger_words: set[str]) -> str:
    out, last = [], 0
    for (a, b), f in zip(ws.spans, ws.suspicion):
        out.append(H.esc(ws.text[last:a]))
        w = ws.text[a:b]
        cls = "dropped" if f > threshold else ("changed" if w in trigger_words else "")
        out.append(f'<span class="{cls}" title="suspicion {f:.1f}">{H.esc(w)}</span>' if cls else H.esc(w))
        last = b
    return "".join(out) + H.esc(ws.text[last:])


def demo_step(quick: bool, out_dir: Path):
    from ....core.data import load_text_dataset
    from ....report.step import StepResult, SummaryRow
    from ..poison import PoisonConfig, make_trigger
    from .onion import LMScorer, onion_scores

    n = 2 if quick else 6
    sp = load_text_dataset("rotten-tomatoes", seed=0)
    rng = np.random.default_rng(0)
    clean = [s.text for s in sp.test if s.label == 0 and 8 <= len(s.text.split()) <= 20][:2 * n]
    bad = make_trigger(PoisonConfig(attack="badnets")).apply_many(clean[:n], rng)
    punc = make_trigger(PoisonConfig(attack="punc", punc={"placement": "random"})).apply_many(clean[n:2 * n], rng)
    texts = [e.text for e in bad] + [e.text for e in punc] + clean[:n]
    kinds = ["badnets"] * n + ["punc"] * n + ["clean"] * n
    ws = onion_scores(texts, LMScorer("smollm2-135m"))
    t = 0.0  # the paper's default threshold: any word whose removal lowers perplexity
    trig = {"cf", "mn", "bb", "tq", ";", "!"}
    rows, items = [], []
    for kind in ("badnets", "punc", "clean"):
        sel = [w for w, k in zip(ws, kinds) if k == kind]
        removed_trig = removed_other = n_trig = n_other = 0
        for w in sel:
            for (a, b), f in zip(w.spans, w.suspicion):
                is_t = w.text[a:b] in trig and kind != "clean"
                n_trig += is_t
                n_other += not is_t
                removed_trig += is_t and f > t
                removed_other += (not is_t) and f > t
        rows.append(SummaryRow(f"ONION t=0 on {kind} sentences: trigger tokens removed",
                               f"{removed_trig}/{n_trig}" if n_trig else "-", n=len(sel),
                               baseline=f"{removed_other}/{n_other}",
                               baseline_name="other words of the same sentences removed"))
    for w, k in zip(ws, kinds):
        items.append(f"<li><b>{k}</b>: {_highlight(w, t, trig if k != 'clean' else set())}</li>")
    html = ("<p>ONION with SmolLM2-135M perplexity, word-level with punctuation as its own token. "
            "Struck-through words are the ones ONION deletes at t=0; trigger tokens it keeps are marked red.</p>"
            f"<ul>{''.join(items)}</ul>")
    res_json = Path(__file__).resolve().parents[4] / "benchmarks" / "results" / "defence.json"
    png = res_json.parent / "defence_asr_heatmap.png"
    if res_json.is_file() and png.is_file():
        doc = json.loads(res_json.read_text())
        html += "<h3>Attack x defence grid (slimguard bench defence)</h3>" + H.img_file(png)
        html += H.table([{"target": k, "value": v["value"], "goal": v["goal"], "met": v["met"]}
                         for k, v in doc.get("targets", {}).items()])
        html += f"<p><small>{H.esc(doc.get('note', ''))}</small></p>"
    return StepResult(title="Backdoor defences (ONION, STRIP, RAP, BKI, CUBE, fine-tuning)", summary=rows, html=html,
                      goal="ONION should delete the words whose removal lowers a language model's perplexity, "
                           "which takes out rare-word triggers.",
                      shows=f"At t=0 ONION removed {rows[0].value} BadNets trigger tokens and {rows[1].value} "
                            "PuncAttack trigger marks.",
                      canonical=("defence",), featured=("onion_badnets_asr_after",))
