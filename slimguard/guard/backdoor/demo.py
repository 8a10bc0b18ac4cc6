"""Demo step ``backdoor``: a PuncAttack backdoor on Rotten Tomatoes, then the ONION defence.

PuncAttack (Sheng et al. 2023) poisons a MiniLM sentiment classifier; the step shows clean
vs poisoned examples side by side and CACC/ASR before and after ONION (Qi et al. 2021), if
the defences package is present. quick=True trains on 300 samples (tail placement, no LM)
so it fits in well under a minute of CPU; quick=False uses 1000 samples and LM placement, and
ONION scores 60 clean + 60 poisoned test sentences (its LM pass is the step's main cost).
"""

from __future__ import annotations

import json
from pathlib import Path


def demo_step(quick: bool, out_dir: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ...report.step import StepResult
    from ...report.html import esc, figure
    from .attack import AttackConfig, attack
    from .records import load_run
    from .report import examples_html

    cfg = AttackConfig(max_train=300 if quick else 1000, max_dev=100 if quick else 300, max_test=150 if quick else 500,
                       stealth_pairs=0 if quick else 60,
                       poison={"attack": "punc", "rate": 0.2 if quick else 0.1,
                               "punc": {"placement": "tail" if quick else "lm"}},
                       victim={"epochs": 2 if quick else 2})
    run, m = attack(cfg, "backdoor-punc", progress=False, root=out_dir)
    rows = [{"metric": "CACC (poisoned model)", "slimguard": m["cacc"]},
            {"metric": "ASR PuncAttack", "slimguard": m["asr"]},
            {"metric": "eligible fraction (>= 2 punctuation slots)", "slimguard": m["eligible_fraction"]}]
    if "similarity" in m:
        rows.append({"metric": "similarity clean vs poisoned (MiniLM)", "slimguard": m["similarity"]})
        rows.append({"metric": "delta-PPL (SmolLM2)", "slimguard": m["delta_ppl"]})
    defence_note = "ONION not available in this checkout: attack only."
    after = None
    try:
        from .defences import OnionConfig, defend_run
    except ImportError:
        OnionConfig = None  # noqa: N806
    if OnionConfig is not None:
        try:
            _, rep = defend_run(run.path, OnionConfig(max_eval=20 if quick else 60, calib_size=30 if quick else 60,
                                                      threshold=0.0 if quick else None),
                                root=out_dir, run_name="defend-onion", progress=False)
            after = rep
            rows += [{"metric": "ASR after ONION", "slimguard": rep.asr_after, "baseline": rep.asr_before},
                     {"metric": "CACC after ONION", "slimguard": rep.cacc_after, "baseline": rep.cacc_before}]
            defence_note = "ONION (perplexity-based word removal) run on the same poisoned model."
        except Exception as e:  # the defence is another package's; the attack result still stands  # noqa: BLE001
            defence_note = f"ONION failed: {esc(str(e).splitlines()[0] if str(e) else type(e).__name__)}"
    fig, ax = plt.subplots(figsize=(5, 2.8))
    names, vals = ["CACC", "ASR"], [m["cacc"], m["asr"]]
    if after is not None:
        names += ["CACC\nONION", "ASR\nONION"]
        vals += [after.cacc_after, after.asr_after]
    ax.bar(names, vals, color=["#48a", "#c44", "#8ac", "#e99"][:len(vals)])
    ax.set_ylim(0, 1)
    ax.set_title("PuncAttack on Rotten Tomatoes (MiniLM victim)")
    r = load_run(run.path)
    html = (f"<p>Trigger marks {esc(''.join(cfg.poison.punc.marks))} written over existing punctuation; "
            f"{len([s for s in r.train if s.meta['poisoned']])} of {len(r.train)} training samples poisoned; "
            f"ASR over {m['asr_n']} non-target test samples. {defence_note}</p>"
            + figure(fig) + "<h3>clean vs poisoned (changes highlighted)</h3>"
            + examples_html(r.test_poisoned, n=6, label_names=r.label_names)
            + f"<p><small>run: {esc(run.path)}; metrics: {esc(json.dumps({k: m[k] for k in ('cacc', 'asr', 'asr_n')}))}</small></p>")
    return StepResult("Backdoor attack: PuncAttack (+ ONION)", rows, html)
