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
    import numpy as np

    from ...core.data import load_text_dataset
    from ...report.step import StepResult
    from ...report.html import esc, figure, table
    from .attack import attack_set, search
    from .fewshot import build_classifier
    from .metrics import accuracy, flip_rate
    from .templates import default_template, default_verbalizer, token_edits
    from .victims import load_victim

    n_test, n_attack, queries, steps = (32, 4, 8, 1) if quick else (150, 8, 24, 3)
    ds = load_text_dataset("rotten-tomatoes", seed=0)
    test = ds.test[:n_test]
    victim = load_victim("smollm2-135m")
    tmpl, verb = default_template("rotten-tomatoes"), default_verbalizer("rotten-tomatoes")
    setting = "zeroshot" if quick else "fewshot"
    clf = build_classifier(victim, tmpl, verb, ds.train, setting=setting, k=16, seed=0)
    tb = victim.prepare([s.text for s in test], [s.label for s in test], [s.uid for s in test], tmpl)
    clean = clf.predict(tb)
    shots = attack_set(clf, ds.dev, n_attack, 32, np.random.default_rng(0))
    ab = victim.prepare([s.text for s in shots], [s.label for s in shots], [s.uid for s in shots], tmpl)
    rows, summary = [], []
    for strat in ("gradient", "random"):
        st = search(clf, shots, recipe=strat, max_edits=3, max_steps=steps, max_queries=queries, seed=0, batches=ab)
        att = clf.predict(tb, st.infix)
        rows.append({"strategy": strat, "malicious template": tmpl.with_infix(victim.decode_infix(st.infix)).text,
                     "accuracy": accuracy(att, test), "flip rate": flip_rate(clean, att, test),
                     "tokens changed": token_edits(clf.infix_ids, st.infix), "queries": st.queries, "steps": st.steps})
    clean_acc = accuracy(clean, test)
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
