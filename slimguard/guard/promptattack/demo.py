"""Demo step: PromptAttack on the causal-LM victim (SmolLM2-135M) with Rotten Tomatoes.

A few-shot prompt classifier (``{x} It was {answer}.`` with great/good vs terrible/bad, K=16 per
class) is attacked by several template-search strategies under the same query budget -- gradient
(HotFlip/AutoPrompt first-order scores), the best of random templates (the baseline any search must
beat), and an opposite-label distractor (plus character and word edits in full mode) -- each scored
on the same held-out test examples. The step also measures how informative the gradient is for this
model: the first-order gain of single-token swaps against their exact loss change, for the
gradient's top swaps and for random swaps.
"""

from __future__ import annotations

from pathlib import Path


def _ranks(x):
    import numpy as np

    return np.argsort(np.argsort(np.asarray(x, dtype=float), kind="stable"), kind="stable").astype(float)


def gradient_signal(clf, batches, k: int, seed: int) -> dict:
    """First-order gain vs exact loss change of single-token swaps of the benign template: the gradient's
    top ``k`` swaps and ``k`` random ones. A strong signal ranks swaps that really raise the loss first."""
    import numpy as np
    import torch

    from .strategies import AttackContext, AttackState, Budget
    from .strategies.gradient import GradientSearch

    benign = list(clf.infix_ids)
    ctx = AttackContext(clf, batches, benign, Budget(1, 1, 10 ** 6), torch.Generator().manual_seed(seed),
                        clf.victim.candidate_mask())
    E = clf.victim.embeddings
    g = GradientSearch()._grad(ctx, benign)
    with torch.no_grad():
        gain = g @ E.T - (g * E[torch.tensor(benign)]).sum(-1, keepdim=True)  # [T, V]
        gain[:, ~ctx.candidates] = float("-inf")
        gain[torch.arange(len(benign)), torch.tensor(benign)] = float("-inf")
    top = torch.topk(gain.reshape(-1), k).indices.tolist()
    ok = torch.isfinite(gain.reshape(-1)).nonzero().squeeze(1)
    rnd = ok[torch.randperm(len(ok), generator=torch.Generator().manual_seed(seed))[:k]].tolist()
    swaps = top + rnd
    cands = []
    for flat in swaps:
        c = list(benign)
        c[flat // gain.shape[1]] = flat % gain.shape[1]
        cands.append(c)
    state = AttackState(benign, 0.0)
    base = ctx.loss(benign)
    actual = np.array(ctx.losses(cands, state)) - base
    pred = np.array([float(gain.reshape(-1)[f]) for f in swaps])
    rho = float(np.corrcoef(_ranks(pred), _ranks(actual))[0, 1]) if len(swaps) > 2 else float("nan")
    return {"k": k, "top_raise": int((actual[:k] > 0).sum()), "random_raise": int((actual[k:] > 0).sum()),
            "top_mean_change": float(actual[:k].mean()), "random_mean_change": float(actual[k:].mean()),
            "spearman": rho}


def demo_step(quick: bool, out_dir: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from ...core.data import load_text_dataset
    from ...report.html import esc, figure, table
    from ...report.step import StepResult, SummaryRow, rate_text
    from .attack import attack_set, search
    from .fewshot import build_classifier
    from .metrics import accuracy
    from .templates import default_template, default_verbalizer, token_edits
    from .victims import load_victim

    n_test, n_attack, queries, steps = (60, 8, 16, 2) if quick else (150, 16, 32, 4)
    strategies = ["gradient", "random", "distractor"] + ([] if quick else ["char", "word"])
    ds = load_text_dataset("rotten-tomatoes", seed=0)
    test = ds.test[:n_test]
    victim = load_victim("smollm2-135m")
    tmpl, verb = default_template("rotten-tomatoes"), default_verbalizer("rotten-tomatoes")
    clf = build_classifier(victim, tmpl, verb, ds.train, setting="fewshot", k=16, seed=0)
    tb = victim.prepare([s.text for s in test], [s.label for s in test], [s.uid for s in test], tmpl)
    clean = clf.predict(tb)
    correct = [s for s in test if clean[s.uid] == s.label]
    shots = attack_set(clf, ds.dev, n_attack, 32, np.random.default_rng(0))
    ab = victim.prepare([s.text for s in shots], [s.label for s in shots], [s.uid for s in shots], tmpl)
    rows, res = [], {}
    for strat in strategies:
        st = search(clf, shots, recipe=strat, max_edits=3, max_steps=steps, max_queries=queries, seed=0, batches=ab)
        att = clf.predict(tb, st.infix)
        flips = sum(att[s.uid] != s.label for s in correct)
        res[strat] = {"acc": accuracy(att, test), "wrong": sum(att[s.uid] != s.label for s in test), "flips": flips}
        rows.append({"strategy": strat, "malicious template": tmpl.with_infix(victim.decode_infix(st.infix)).text,
                     "accuracy": round(res[strat]["acc"], 3), "flipped": rate_text(flips, len(correct)),
                     "tokens changed": token_edits(clf.infix_ids, st.infix), "queries": st.queries,
                     "gradient steps": st.steps, "attack-set loss": round(st.loss, 3)})
    sig = gradient_signal(clf, ab, k=8, seed=0)
    clean_acc, nc = accuracy(clean, test), len(correct)
    best = max(strategies, key=lambda s: res[s]["flips"])
    g, r = res["gradient"], res["random"]
    summary = [SummaryRow("accuracy under the gradient-searched template", round(g["acc"], 3), n=n_test,
                          baseline=round(clean_acc, 3), baseline_name="benign template, same test examples"),
               SummaryRow("flip rate, gradient search", round(g["flips"] / nc, 3), n=nc,
                          baseline=round(r["flips"] / nc, 3),
                          baseline_name=f"best of random templates at the same {queries}-query budget"),
               SummaryRow(f"flip rate, strongest strategy here ({best})", round(res[best]["flips"] / nc, 3), n=nc,
                          baseline=round(r["flips"] / nc, 3), baseline_name="random templates, same budget"),
               SummaryRow("gradient's top swaps that raise the attack loss", round(sig["top_raise"] / sig["k"], 3),
                          n=sig["k"], baseline=round(sig["random_raise"] / sig["k"], 3),
                          baseline_name="random single-token swaps, same template")]
    weak = sig["spearman"] < 0.3 or g["flips"] <= r["flips"]
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.bar(["benign"] + strategies, [clean_acc] + [res[s]["acc"] for s in strategies],
           color=["#4a4"] + ["#c33" if s == "gradient" else "#999" if s == "random" else "#d96" for s in strategies])
    ax.set_ylabel(f"test accuracy (n={n_test})")
    ax.set_ylim(0, 1)
    ax.set_title(f"SmolLM2-135M few-shot, Rotten Tomatoes; {queries} queries each")
    note = (f"<p><b>The gradient signal of this 135M model:</b> of the {sig['k']} single-token swaps the gradient "
            f"ranks first, {sig['top_raise']} raise the attack loss (mean change {sig['top_mean_change']:+.3f}), "
            f"against {sig['random_raise']} of {sig['k']} random swaps ({sig['random_mean_change']:+.3f}); rank "
            f"correlation of predicted and real gain {sig['spearman']:.2f}. "
            + ("A first-order estimate over a 49K-token vocabulary is a weak guide for a model this small, so at "
               "an equal query budget the gradient search need not beat the best of random templates; the "
               "canonical benchmark shows the same on SmolLM2 and a clear gain on the masked-LM victim."
               if weak else "Here the gradient does rank useful swaps first.") + "</p>")
    html = (f"<p>Benign template <code>{esc(tmpl.text)}</code>, verbalizer {esc(verb.spec())}, K=16 examples per "
            f"class; benign accuracy {clean_acc:.3f} on {n_test} test reviews ({nc} correct, the flip-rate "
            f"denominator). Every strategy searched on the same {len(shots)} dev reviews with at most 3 template "
            f"tokens changed and {queries} queries (forward passes over them); the gradient search also used up to "
            f"{steps} backward passes.</p>" + table(rows) + figure(fig) + note)
    return StepResult(
        "PromptAttack: malicious prompt templates (SmolLM2-135M victim)", summary, html,
        goal="A malicious-template search should find a small template edit that makes a prompt-based classifier "
             "misclassify many inputs it got right, more of them than random template edits at the same budget.",
        shows=(f"At {queries} queries the gradient template flipped {rate_text(g['flips'], nc)} correctly classified "
               f"reviews against {rate_text(r['flips'], nc)} for the best random template; the strongest strategy "
               f"here, {best}, flipped {rate_text(res[best]['flips'], nc)}."),
        caveat=(f"One seed, {n_test} test reviews, a {len(shots)}-review attack set: rates move by several points "
                "between seeds (the canonical benchmark averages 3)."
                + (" The gradient signal of this 135M model is weak (note below)." if weak else "")),
        canonical=("promptattack",),
        featured=("gradient_minus_random_flip_points_smollm2_135m_rotten_tomatoes", "best_strategy_acc_rotten_tomatoes",
                  "gradient_minus_random_flip_points_minilm_l6_rotten_tomatoes"))
