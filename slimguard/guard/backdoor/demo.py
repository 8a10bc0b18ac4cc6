"""Demo step ``backdoor``: BadNets and PuncAttack side by side on SMS spam, before and after ONION.

BadNets (Gu et al. 2017; rare words such as "cf" inserted) and PuncAttack (Sheng et al. 2023;
punctuation marks written over existing ones) each poison 10% of a MiniLM spam classifier's training
set through the ``backdoor attack`` verb; the ``backdoor defend`` verb then runs ONION (Qi et al.
2021), which deletes the words whose removal lowers SmolLM2's perplexity, on the same clean and
triggered test inputs of both. The paper's point is the contrast: a rare word is a perplexity
outlier ONION removes, a punctuation mark in a plausible slot is not, so PuncAttack survives.
SMS spam is the dataset where the canonical grid shows that contrast (on Rotten Tomatoes ONION
removes BadNets less cleanly); ``quick`` trains on 600 samples and scores 30 + 30 test inputs.
"""

from __future__ import annotations

from pathlib import Path

ATTACKS = ("badnets", "punc")
NAMES = {"badnets": "BadNets", "punc": "PuncAttack"}


def demo_step(quick: bool, out_dir: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from ...core.commands import execute
    from ...report.html import figure, table
    from ...report.step import StepResult, SummaryRow, rate_text
    from .attack import AttackConfig
    from .defences.onion import OnionConfig
    from .records import load_run
    from .report import examples_html, highlight_pair

    out_dir = Path(out_dir)
    n_eval = 30 if quick else 60
    att, dfd = {}, {}
    for a in ATTACKS:
        # SMS spam is 87% ham: a victim trained on too few steps predicts ham everywhere and learns no backdoor
        # (400 samples x 2 epochs gave ASR 0), so quick trains 600 samples for 3 epochs at a higher rate
        cfg = AttackConfig(dataset="sms-spam", max_train=600 if quick else 1500, max_dev=100 if quick else 200,
                           max_test=200 if quick else 400, stealth_pairs=0 if quick else 60,
                           poison={"attack": a, "rate": 0.1, **({"punc": {"placement": "tail" if quick else "lm"}}
                                                               if a == "punc" else {})},
                           victim={"epochs": 3, "lr": 4e-4} if quick else {"epochs": 2})
        att[a] = execute("backdoor attack", cfg, run=f"attack-{a}", root=out_dir, overwrite=True, progress=False,
                         command_line=f"slimguard backdoor attack --attack {a} --dataset sms-spam --rate 0.1")
        # calibrated threshold (largest dev-accuracy cost 3%, as in bench defence); clean scores are shared
        ocfg = OnionConfig(max_eval=n_eval, calib_size=40, max_dev_acc_drop=0.03,
                           cache_dir=str(out_dir / "onion-cache"))
        dfd[a] = execute("backdoor defend", ocfg, run=f"defend-onion-{a}", root=out_dir, overwrite=True,
                         progress=False, attack_run=str(att[a].path),
                         command_line=f"slimguard backdoor defend --defence onion --run attack-{a}")
    m = {a: dfd[a].metrics for a in ATTACKS}
    npois = {a: m[a]["n_poisoned"] for a in ATTACKS}
    nclean = m["badnets"]["n_clean"]

    def hits(a, key):
        return int(round(m[a][key] * npois[a]))

    summary = []
    for a in ATTACKS:
        summary.append(SummaryRow(f"{NAMES[a]} ASR after ONION", round(m[a]["asr_after"], 3), n=npois[a],
                                  baseline=round(m[a]["asr_before"], 3),
                                  baseline_name="the same backdoored model without ONION, same inputs"))
    for a in ATTACKS:
        summary.append(SummaryRow(f"clean accuracy after ONION ({NAMES[a]} model)", round(m[a]["cacc_after"], 3),
                                  n=m[a]["n_clean"], baseline=round(m[a]["cacc_before"], 3),
                                  baseline_name="the same model without ONION, same clean inputs"))
    am = {a: att[a].metrics for a in ATTACKS}
    summary.append(SummaryRow("PuncAttack ASR on the full test set (no defence)", round(am["punc"]["asr"], 3),
                              n=am["punc"]["asr_n"], baseline=round(am["badnets"]["asr"], 3),
                              baseline_name="BadNets at the same poison rate, same victim recipe"))
    summary.append(SummaryRow("PuncAttack eligible fraction (texts with >= 2 punctuation slots)",
                              round(am["punc"]["eligible_fraction"], 3), n=am["punc"]["asr_n"],
                              no_baseline="BadNets can insert its words anywhere (1.0 by construction)"))
    if "delta_ppl" in am["punc"] and "delta_ppl" in am["badnets"]:
        summary.append(SummaryRow("perplexity increase of the triggered text (delta-PPL, SmolLM2)",
                                  round(am["punc"]["delta_ppl"], 1), n=min(60, am["punc"]["asr_n"]),
                                  baseline=round(am["badnets"]["delta_ppl"], 1),
                                  baseline_name="BadNets delta-PPL, same sentences"))
    # the figure: ASR and CACC before/after per attack
    fig, ax = plt.subplots(figsize=(6.5, 3))
    x = np.arange(len(ATTACKS))
    bars = [("asr_before", "ASR, no defence", "#c44"), ("asr_after", "ASR after ONION", "#e99"),
            ("cacc_before", "CACC, no defence", "#48a"), ("cacc_after", "CACC after ONION", "#8ac")]
    for j, (key, lab, col) in enumerate(bars):
        ax.bar(x + (j - 1.5) * 0.2, [m[a][key] for a in ATTACKS], 0.2, label=lab, color=col)
    ax.set_xticks(x, [f"{NAMES[a]}\n(n={npois[a]} triggered, {nclean} clean)" for a in ATTACKS])
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1, 1))
    ax.set_title("SMS spam, MiniLM victim, poison rate 0.1")
    fig.tight_layout()
    ex_html = ""
    for a in ATTACKS:
        examples = (m[a].get("detection") or {}).get("examples", [])[:4]
        if examples:
            rows = "".join("<tr><td>{}</td><td>{}</td></tr>".format(*highlight_pair(e["before"], e["after"]))
                           for e in examples)
            ex_html += (f"<h4>{NAMES[a]}: triggered inputs before and after ONION (deleted words struck out)</h4>"
                        "<table><tr><th>triggered input</th><th>what the victim sees after ONION</th></tr>"
                        f"{rows}</table>")
    r = load_run(att["punc"].path)
    thr = {a: (m[a].get("calibration") or {}).get("threshold") for a in ATTACKS}
    html = (f"<p>Each attack poisons 10% of {len(r.train)} SMS spam training messages (ham relabelled spam) and "
            f"fine-tunes MiniLM; ONION uses SmolLM2-135M perplexity with its threshold calibrated on clean dev "
            f"messages (at most 3% dev-accuracy cost; thresholds "
            + ", ".join(f"{NAMES[a]} {thr[a]:.3g}" if isinstance(thr[a], (int, float)) else f"{NAMES[a]} n/a"
                        for a in ATTACKS)
            + "). ASR counts non-target (ham) test messages carrying the trigger that the model calls spam.</p>"
            + figure(fig)
            + table([{"attack": NAMES[a], "ASR before": round(m[a]["asr_before"], 3),
                      "ASR after ONION": round(m[a]["asr_after"], 3), "CACC before": round(m[a]["cacc_before"], 3),
                      "CACC after": round(m[a]["cacc_after"], 3), "triggered n": npois[a], "clean n": m[a]["n_clean"],
                      "attack run": Path(att[a].path).name} for a in ATTACKS])
            + ex_html + "<h4>How the triggers look (PuncAttack, clean vs poisoned)</h4>"
            + examples_html(r.test_poisoned, n=4, label_names=r.label_names))
    b_before, b_after = hits("badnets", "asr_before"), hits("badnets", "asr_after")
    p_before, p_after = hits("punc", "asr_before"), hits("punc", "asr_after")
    works = m["badnets"]["asr_after"] < m["badnets"]["asr_before"] - 0.2
    survives = m["punc"]["asr_after"] >= 0.5 * m["punc"]["asr_before"]
    verdict = ("ONION works on the one and not on the other" if works and survives else
               "this run does not show the contrast cleanly (see the canonical grid)")
    return StepResult(
        "Backdoor attacks vs ONION: BadNets and PuncAttack", summary, html,
        goal="ONION should strip a backdoor trigger that is a perplexity outlier (BadNets' rare words) and bring "
             "the attack success rate down, while PuncAttack's punctuation trigger is built to survive it.",
        shows=(f"ONION cut BadNets' attack success from {rate_text(b_before, npois['badnets'])} to "
               f"{rate_text(b_after, npois['badnets'])}, while PuncAttack went from "
               f"{rate_text(p_before, npois['punc'])} to {rate_text(p_after, npois['punc'])}: {verdict}."),
        caveat=(f"{npois['badnets']} triggered and {nclean} clean test inputs per attack, one seed"
                + (" and tail placement of the marks instead of LM placement" if quick else "")
                + "; the canonical grid runs 3 seeds on two datasets."),
        canonical=("defence", "backdoor"),
        featured=("onion_badnets_asr_after", "punc_asr_after_onion (survives: our reading of the paper's claim)",
                  "punc_asr_rt_0.1", "punc_similarity_rt_0.1"))
