"""Demo step: PromptAttack on the causal-LM victim (SmolLM2-135M) with Rotten Tomatoes.

A few-shot prompt classifier (``{x} It was {answer}.`` with great/good vs terrible/bad) is
attacked by gradient template search and by the random-template baseline under the same
budget; the report shows benign and malicious templates side by side with the accuracy drop.
"""

from __future__ import annotations

from pathlib import Path


def demo_step(quick: bool, out_dir: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ...report.step import StepResult
    from ...report.html import esc, figure, table
    from .attack import PromptAttackConfig, run_promptattack
    from .victims import load_victim

    n_test, n_attack, queries, steps = (32, 4, 8, 1) if quick else (150, 8, 24, 3)
    victim = load_victim("smollm2-135m")
    setting = "zeroshot" if quick else "fewshot"
    rows, summary = [], []
    for strat in ("gradient", "random"):
        # the pipeline `slimguard promptattack run` runs (one victim, loaded once; no template perplexity here)
        cfg = PromptAttackConfig(victim="smollm2-135m", dataset="rotten-tomatoes", setting=setting, k=16, seed=0,
                                 strategy=strat, max_edits=3, max_steps=steps, max_queries=queries, n_attack=n_attack,
                                 n_test=n_test, ppl_model=None)
        out = run_promptattack(cfg, victim=victim, log=lambda _msg: None)
        rows.append({"strategy": strat, "malicious template": out.malicious_template, "accuracy": out.attacked_acc,
                     "flip rate": out.flip_rate, "tokens changed": out.edits, "queries": out.queries,
                     "steps": out.steps})
    clean_acc = out.clean_acc  # the benign template's accuracy: the same classifier and test slice in both runs
    tmpl, verb = cfg.benign_template(), cfg.label_words()
    summary.append({"metric": f"accuracy ({setting}, n={n_test})", "benign": clean_acc,
                    "gradient": rows[0]["accuracy"], "random": rows[1]["accuracy"]})
    summary.append({"metric": "flip rate", "benign": 0.0, "gradient": rows[0]["flip rate"], "random": rows[1]["flip rate"]})
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.bar(["benign", "gradient", "random"], [clean_acc, rows[0]["accuracy"], rows[1]["accuracy"]],
           color=["#4a4", "#c33", "#999"])
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.set_title(f"SmolLM2-135M, Rotten Tomatoes, n={n_test}")
    html = (f"<p>Benign template <code>{esc(tmpl.text)}</code>, verbalizer {esc(verb.spec())}, accuracy "
            f"{clean_acc:.3f}. Malicious templates found with a budget of 3 template tokens:</p>"
            + table(rows) + figure(fig))
    return StepResult("PromptAttack: malicious prompt templates (SmolLM2-135M victim)", summary, html)
