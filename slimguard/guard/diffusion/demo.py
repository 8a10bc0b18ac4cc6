"""Demo step for BiBadDiff (Pan et al., NeurIPS 2024): poison Fashion-MNIST with a BadNets patch,
train a class-conditional diffusion model on it, and measure what the poisoning does to generation.

The question the paper asks: do target-conditioned generations carry the trigger *more often* than
the training images of the target class did (trigger amplification), and more so at higher
classifier-free guidance? The step answers it for this model with the amplification curve over
guidance against the within-class trigger fraction (the stricter of the paper's two baselines; the
global poison rate is the other), each point with its n and a 95% interval, and says in words what
a reader should conclude. It also uses the diffusion model as a classifier (a robust one when the
per-pixel errors in the trigger area are filtered out) against a CNN trained on the same data.

If ``slimguard bench diffusion`` has already trained its model (``runs/bench-diffusion-seed0``) the
step reuses it; otherwise the ``diffusion train`` verb trains one here (quick: a short run).
"""

from __future__ import annotations

from pathlib import Path


def conclusion(points: list[dict], within: float, global_rate: float, n: int) -> tuple[str, float]:
    """The amplification verdict in words, from the trigger ratio at w >= 2 against the within-class fraction.

    Returns (sentence, smallest ratio / within-class fraction at w >= 2)."""
    from ...report.step import wilson

    hi = [p for p in points if p["guidance"] >= 2] or points
    factors = [p["trigger_ratio"] / within for p in hi] if within else [float("nan")]
    low = min(factors)
    ci = [wilson(round(p["trigger_ratio"] * n), n) for p in hi]
    if all(lo > within for lo, _ in ci):
        verdict = (f"amplified: at every guidance >= 2 the trigger appears in more target generations than in "
                   f"the target class's training images ({within:.2f}), beyond the 95% interval")
    elif all(up < within for _, up in ci):
        verdict = (f"not amplified: at guidance >= 2 the trigger appears in fewer target generations than in the "
                   f"target class's training images ({within:.2f}); the model reproduces (part of) the triggered "
                   f"share it was shown rather than amplifying it")
    else:
        verdict = (f"not distinguishable from the within-class fraction ({within:.2f}) at this n: no evidence of "
                   f"amplification beyond what the model was shown")
    above_global = all(p["trigger_ratio"] > global_rate for p in hi)
    return (verdict + (f"; it is above the global poison rate ({global_rate:.2f}), the weaker baseline"
                       if above_global else "") + "."), low


def demo_step(quick: bool, out_dir: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ...core.commands import execute
    from ...core.runs import runs_root
    from ...report.html import esc, figure, img_file, table
    from ...report.step import StepResult, SummaryRow, rate_text, wilson
    from .config import AmplifyConfig, ClassifyConfig, CNNConfig, DataConfig, TrainConfig
    from .model import image_grid, load_model
    from .train import training_data_of

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    bench_model = runs_root() / "bench-diffusion-seed0" / "model"
    if (bench_model / "diffusion.json").is_file():
        model_dir = bench_model
        origin = f"reused the benchmark model {bench_model}"
    else:
        steps = 300 if quick else 1000
        tcfg = TrainConfig(data=DataConfig(n_train=3000 if quick else 6000), steps=steps, batch_size=64,
                           warmup=30 if quick else 100, checkpoint_every=steps)
        tr = execute("diffusion train", tcfg, run="diffusion-train", root=out_dir, overwrite=True, progress=False,
                     command_line=f"slimguard diffusion train --steps {steps}")
        model_dir = Path(tr.metrics["model_dir"])
        origin = (f"trained here with <code>slimguard diffusion train</code> for {steps} steps "
                  f"({tr.metrics['train_seconds']:.0f} s)")
    model = load_model(model_dir)
    tcfg, data, ps = training_data_of(model)
    cnn = CNNConfig(epochs=2 if quick else 3)
    n = 48 if quick else 96
    acfg = AmplifyConfig(n_samples=n, ddim_steps=15 if quick else 25, guidance=[0.0, 1.0, 2.0, 5.0], cnn=cnn)
    amp = execute("diffusion amplify", acfg, run="diffusion-amplify", root=out_dir, overwrite=True, progress=False,
                  command_line=f"slimguard diffusion amplify --n-samples {n}", model=str(model_dir))
    a = amp.metrics
    pts, within, glob = a["points"], a["within_class_fraction"], a["global_rate"]
    cls = execute("diffusion classify", ClassifyConfig(n_test=30 if quick else 60, draws=2 if quick else 4, cnn=cnn),
                  run="diffusion-classify", root=out_dir, overwrite=True, progress=False,
                  command_line="slimguard diffusion classify", model=str(model_dir)).metrics["results"]
    by = {c["method"]: c for c in cls}
    filt = by.get("diffusion-filtered", cls[-1])
    words, _ = conclusion(pts, within, glob, n)
    # the curve: trigger ratio with 95% intervals, the within-class and global lines, misalignment
    ws = [p["guidance"] for p in pts]
    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    hits = [round(p["trigger_ratio"] * n) for p in pts]
    ci = [wilson(h, n) for h in hits]
    ax.errorbar(ws, [p["trigger_ratio"] for p in pts], yerr=[[p["trigger_ratio"] - lo for p, (lo, _) in zip(pts, ci)],
                                                             [up - p["trigger_ratio"] for p, (_, up) in zip(pts, ci)]],
                fmt="o-", capsize=3, label=f"trigger ratio of target generations (n={n} each, 95% CI)")
    ax.plot(ws, [p["misalignment"] for p in pts], "^--", color="tab:gray", label="G1 misalignment (clean CNN)")
    ax.axhline(within, color="r", ls=":", label=f"within-class trigger fraction of training data ({within:.2f})")
    ax.axhline(glob, color="k", ls=":", lw=0.8, label=f"global poison rate ({glob:.2f})")
    ax.set(xlabel="classifier-free guidance w", ylabel="share of target generations", ylim=(0, 1))
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1, 1))
    ax.set_title("trigger amplification over guidance")
    fig.tight_layout()
    p2 = next(p for p in pts if p["guidance"] == 2.0)
    h2 = round(p2["trigger_ratio"] * n)
    image_grid([ps.x[ps.poisoned][:12], data.x_train[data.y_train == ps.target][:12]], out_dir / "training_data.png",
               row_labels=["poisoned", "clean target"])
    summary = [
        SummaryRow("trigger ratio of target generations at w=2", round(p2["trigger_ratio"], 3), n=n,
                   baseline=round(within, 3), baseline_name="within-class trigger fraction of the training data"),
        SummaryRow("trigger ratio at w=2 vs the weaker baseline", round(p2["trigger_ratio"], 3), n=n,
                   baseline=round(glob, 3), baseline_name="global poison rate of the training data"),
        SummaryRow("G1 misalignment at w=2 (clean CNN does not see the target)", round(p2["misalignment"], 3), n=n,
                   baseline=round(next(p for p in pts if p["guidance"] == 0.0)["misalignment"], 3),
                   baseline_name="the same model without guidance (w=0)"),
        SummaryRow(f"backdoor ASR of the diffusion classifier ({filt['method']})", round(filt["asr"], 3),
                   n=filt["n_triggered"], baseline=round(by["cnn"]["asr"], 3),
                   baseline_name="CNN trained on the same poisoned data"),
        SummaryRow(f"clean accuracy of the diffusion classifier ({filt['method']})", round(filt["cacc"], 3),
                   n=filt["n_clean"], baseline=round(by["cnn"]["cacc"], 3),
                   baseline_name="CNN trained on the same poisoned data"),
    ]
    html = (f"<p>BadNets patch, poison rate {tcfg.poison.rate:g} of {len(ps.y)} training images, target class "
            f"<b>{esc(data.class_names[ps.target])}</b>; model {origin}. Target-conditioned generations per "
            f"guidance scale are judged by a trigger detector (held-out accuracy {a['detector_heldout_accuracy']:.3f}) "
            f"and a clean CNN (accuracy {a['clean_cnn_accuracy']:.3f}).</p>"
            + figure(fig)
            + f"<p><b>Conclusion:</b> {esc(words)}</p>"
            + table([{"guidance w": p["guidance"], "trigger ratio": rate_text(h, n),
                      "/ within-class": round(p["vs_within_class"], 2), "/ global rate": round(p["vs_global"], 2),
                      "pattern check": round(p["pattern_ratio"], 3), "misalignment": round(p["misalignment"], 3)}
                     for p, h in zip(pts, hits)])
            + f"<p>Control: class {a['control_class']} generations at the largest w carry the trigger "
              f"{a['control_trigger_ratio']:.3f} of the time (the detector's false-positive floor).</p>"
            + f"<h3>Training data</h3>{img_file(out_dir / 'training_data.png')}"
            + f"<h3>Target-conditioned generations per guidance scale</h3>"
              f"{img_file(Path(amp.path) / 'target_generations.png')}"
            + "<h3>The diffusion model as a classifier vs a CNN</h3>"
            + table([{k: (round(v, 3) if isinstance(v, float) else v) for k, v in c.items()} for c in cls]))
    return StepResult(
        "Diffusion poisoning (BiBadDiff)", summary, html,
        goal="Poisoning only the training data of a class-conditional diffusion model should make its "
             "target-class generations carry the trigger, by the paper's account more often than the target "
             "class's training images did (amplification), increasingly with guidance.",
        shows=(f"At guidance 2, {rate_text(h2, n)} target generations carry the trigger against a within-class "
               f"fraction of {within:.2f} in the training data: {words[0].lower() + words[1:]}"),
        caveat=(f"{n} generations per guidance scale, one seed, 16x16 Fashion-MNIST and a small UNet"
                + (" trained briefly" if quick else "")
                + "; the canonical benchmark (3 seeds) finds the same direction, below the within-class fraction."),
        canonical=("diffusion",),
        featured=("trigger_ratio_over_within_class_at_w>=2 (min over w)", "filtered_diffusion_asr_over_cnn_asr",
                  "cacc_gap_cnn_minus_filtered_diffusion"))
