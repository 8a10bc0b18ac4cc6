"""Demo step for BiBadDiff (Pan et al., NeurIPS 2024): poison Fashion-MNIST, generate, measure.

If ``slimguard bench diffusion`` has already trained its model (``runs/bench-diffusion-seed0``)
the step reuses it; otherwise it trains a small model on the spot (quick: a smoke-scale
model whose numbers only show the pipeline works; full: a few minutes of training).
"""

from __future__ import annotations

from pathlib import Path


def demo_step(quick: bool, out_dir: Path):
    from ...core.runs import runs_root
    from ...report.step import StepResult
    from ...report.html import esc, img_file, table
    from .amplify import measure_amplification, plot_curve
    from .classifiers import train_cnn
    from .config import AmplifyConfig, ClassifyConfig, CNNConfig, DataConfig, TrainConfig
    from .diffclassify import run_classification
    from .model import image_grid, load_model
    from .poison import make_trigger
    from ...core.commands import execute
    from .commands import load_trained
    from .train import training_data_of

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    bench_model = runs_root() / "bench-diffusion-seed0" / "model"
    if (bench_model / "diffusion.json").is_file():
        model = load_model(bench_model)
        tcfg, data, ps = training_data_of(model)
        origin = f"reused the benchmark model {bench_model} ({tcfg.steps} steps)"
    else:
        steps = 60 if quick else 500
        tcfg = TrainConfig(data=DataConfig(n_train=2000 if quick else 6000), steps=steps, batch_size=32 if quick else 64,
                           warmup=10 if quick else 50, checkpoint_every=steps)
        # the `diffusion train` verb in a run folder of the demo's own, then the model as the analysis verbs read it
        out = execute("diffusion train", tcfg, root=out_dir, run="train", overwrite=True, progress=False)
        model, tcfg, data, ps, _ = load_trained(out.path)
        origin = (f"trained here for {steps} steps ({out.metrics['train_seconds']:.0f} s)"
                  f"{'; smoke scale, numbers are not meaningful' if quick else ''}")
    trig = make_trigger(tcfg.poison, tcfg.data.image_size)
    cnn = CNNConfig(epochs=1 if quick else 3)
    acfg = AmplifyConfig(n_samples=16 if quick else 64, ddim_steps=10 if quick else 25, cnn=cnn)
    amp = measure_amplification(model, data, ps, trig, acfg)
    plot_curve(amp, out_dir / "amplification.png")
    image_grid([amp.generations[w][:12] for w in acfg.guidance], out_dir / "target_generations.png",
               row_labels=[f"w={w:g}" for w in acfg.guidance])
    image_grid([ps.x[ps.poisoned][:12], data.x_train[data.y_train == ps.target][:12]], out_dir / "training_data.png",
               row_labels=["poisoned", "clean target"])
    pois_cnn = train_cnn(ps.x, ps.y, data.num_classes, cnn, seed=2)
    cls = run_classification(model, data, ps, trig, ClassifyConfig(n_test=20 if quick else 60, draws=2 if quick else 4,
                                                                   cnn=cnn), cnn=pois_cnn)
    by = {c.method: c for c in cls}
    p2 = next(p for p in amp.points if p.guidance == 2.0)
    summary = [
        {"metric": "trigger ratio, target generations, w=2", "slimguard": p2.trigger_ratio,
         "baseline": amp.within_class_fraction, "baseline is": "within-class trigger fraction of training data"},
        {"metric": "G1 misalignment, w=2", "slimguard": p2.misalignment, "baseline": 0.0, "baseline is": "clean model (ideal)"},
        {"metric": "ASR", "slimguard": by["diffusion-filtered"].asr, "baseline": by["cnn"].asr,
         "baseline is": "CNN on the same poisoned data"},
        {"metric": "CACC", "slimguard": by["diffusion-filtered"].cacc, "baseline": by["cnn"].cacc,
         "baseline is": "CNN on the same poisoned data"},
    ]
    pts = [dict(p.__dict__) for p in amp.points]
    html = (f"<p>BadNets patch, poison rate {tcfg.poison.rate:g}, target class "
            f"<b>{esc(data.class_names[ps.target])}</b>; model {esc(origin)}.</p>"
            f"<h3>Training data</h3>{img_file(out_dir / 'training_data.png')}"
            f"<h3>Target-conditioned generations per guidance scale</h3>{img_file(out_dir / 'target_generations.png')}"
            f"<h3>Trigger amplification and misalignment</h3>{img_file(out_dir / 'amplification.png')}{table(pts)}"
            f"<h3>Diffusion classifier vs CNN</h3>{table([c.__dict__ for c in cls])}")
    return StepResult("Diffusion poisoning (BiBadDiff)", summary, html)
