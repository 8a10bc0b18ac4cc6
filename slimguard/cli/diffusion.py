"""``slimguard diffusion poison | train | sample | amplify | detect | classify`` (BiBadDiff).

Thin shells over :mod:`slimguard.guard.diffusion`: each command resolves its typed config
(``--config FILE``, ``--set key=value``), writes a run directory under ``runs/`` and
prints where. Heavy imports (torch, diffusers) happen inside the commands.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from .options import ConfigOpt, RunOpt, SetOpt, ThreadsOpt, set_threads

app = typer.Typer(no_args_is_help=True)

ModelOpt = typer.Option(..., "--model", "-m", help="A `slimguard diffusion train` run directory (or its model/ folder).")


def _echo_metrics(run, metrics: dict) -> None:
    run.save_metrics(metrics)
    typer.echo(json.dumps(metrics, indent=1, default=str)[:4000])
    typer.echo(f"run: {run.path}")


def _tag(model_dir: Path) -> str:
    p = Path(model_dir)
    return p.parent.name if p.name == "model" else p.name


def _load(model_dir: Path):
    from ..guard.diffusion.model import load_model
    from ..guard.diffusion.poison import make_trigger
    from ..guard.diffusion.train import training_data_of

    model = load_model(model_dir)
    tcfg, data, ps = training_data_of(model)
    return model, tcfg, data, ps, make_trigger(tcfg.poison, tcfg.data.image_size)


@app.command()
def poison(config: Optional[Path] = ConfigOpt, set_: Optional[List[str]] = SetOpt, run_name: Optional[str] = RunOpt,
           rate: Optional[float] = typer.Option(None, help="Poison rate (poison.rate)."),
           target: Optional[int] = typer.Option(None, help="Target class (poison.target)."),
           trigger: Optional[str] = typer.Option(None, help="patch | blend (poison.trigger)."),
           threads: Optional[int] = ThreadsOpt) -> None:
    """Poison the training data only: stamp a trigger on non-target images, relabel, record indices."""
    set_threads(threads)
    import numpy as np

    from ..core.config import resolve
    from ..core.runs import Run
    from ..guard.diffusion.config import PoisonDataConfig
    from ..guard.diffusion.model import image_grid
    from ..guard.diffusion.poison import load_data, poison_dataset

    pois = {k: v for k, v in {"rate": rate, "target": target, "trigger": trigger}.items() if v is not None}
    sets = list(set_ or []) + [f"poison.{k}={v}" for k, v in pois.items()]
    cfg = resolve(PoisonDataConfig, config_file=config, sets=sets)
    data = load_data(cfg.data)
    ps = poison_dataset(data.x_train, data.y_train, cfg.poison, data.num_classes)
    run = Run.create(run_name or f"diffusion-poison-{cfg.poison.trigger}-{cfg.poison.rate:g}",
                     command="slimguard diffusion poison", config=cfg)
    np.savez_compressed(run.artefact("poisoned.npz"), x=ps.x, y=ps.y, poisoned=ps.poisoned,
                        source_index=ps.source_index, poisoned_indices=ps.poisoned_indices)
    (run.path / "poisoned_indices.json").write_text(json.dumps(ps.poisoned_indices.tolist()))
    if cfg.preview:
        image_grid([ps.x[ps.poisoned][:cfg.preview], data.x_train[data.y_train == cfg.poison.target][:cfg.preview]],
                   run.artefact("poisoned_preview.png"), row_labels=["poisoned", "clean target"])
    _echo_metrics(run, {"data": data.name, **ps.stats})


@app.command()
def train(config: Optional[Path] = ConfigOpt, set_: Optional[List[str]] = SetOpt, run_name: Optional[str] = RunOpt,
          steps: Optional[int] = typer.Option(None, help="Optimiser steps (steps)."),
          resume: bool = typer.Option(False, help="Continue from the run's latest checkpoint."),
          threads: Optional[int] = ThreadsOpt) -> None:
    """Train a class-conditional DDPM (CFG label drop) on the poisoned data; checkpoints + --resume."""
    set_threads(threads)
    from ..core.config import resolve
    from ..core.runs import Run
    from ..guard.diffusion.config import TrainConfig
    from ..guard.diffusion.train import train_diffusion

    cfg = resolve(TrainConfig, config_file=config, sets=set_, steps=steps)
    run = Run.create(run_name or f"diffusion-train-{cfg.poison.trigger}-{cfg.poison.rate:g}-s{cfg.seed}",
                     command="slimguard diffusion train" + (" --resume" if resume else ""), config=cfg)
    res = train_diffusion(cfg, run.path, resume=resume, log=run.log)
    _echo_metrics(run, {"steps": res.steps, "train_seconds": res.seconds, "train_cpu_seconds": res.cpu_seconds,
                        "final_loss": res.final_loss,
                        "model_dir": str(res.model_dir), **res.poisoned.stats})


@app.command()
def sample(model: Path = ModelOpt, config: Optional[Path] = ConfigOpt, set_: Optional[List[str]] = SetOpt,
           run_name: Optional[str] = RunOpt, n_per_class: Optional[int] = typer.Option(None, help="Images per class and scale."),
           threads: Optional[int] = ThreadsOpt) -> None:
    """Sample grids per class and guidance scale (DDIM)."""
    set_threads(threads)
    import numpy as np
    import torch

    from ..core.config import resolve
    from ..core.errors import ConfigError
    from ..core.runs import Run
    from ..guard.diffusion.config import SampleConfig
    from ..guard.diffusion.model import image_grid, load_model
    from ..guard.diffusion.model import sample as draw

    cfg = resolve(SampleConfig, config_file=config, sets=set_, n_per_class=n_per_class)
    m = load_model(model)
    classes = cfg.classes if cfg.classes is not None else list(range(m.num_classes))
    bad = [c for c in classes if not 0 <= c < m.num_classes]
    if bad:
        raise ConfigError(f"config key 'classes': {bad} out of range 0..{m.num_classes - 1}")
    run = Run.create(run_name or f"diffusion-sample-{_tag(model)}", command="slimguard diffusion sample", config=cfg)
    g = torch.Generator().manual_seed(cfg.seed)
    names = m.meta.get("class_names", [str(c) for c in range(m.num_classes)])
    out = {}
    for w in cfg.guidance:
        x = draw(m, np.repeat(classes, cfg.n_per_class), guidance=w, steps=cfg.ddim_steps, generator=g)
        out[f"w{w:g}"] = x
        image_grid([x[i * cfg.n_per_class:(i + 1) * cfg.n_per_class] for i in range(len(classes))],
                   run.artefact(f"grid_w{w:g}.png"), row_labels=[names[c] for c in classes], title=f"guidance w={w:g}")
    np.savez_compressed(run.artefact("samples.npz"), classes=np.array(classes), **out)
    _echo_metrics(run, {"model": str(model), "classes": classes, "guidance": cfg.guidance, "n_per_class": cfg.n_per_class})


@app.command()
def amplify(model: Path = ModelOpt, config: Optional[Path] = ConfigOpt, set_: Optional[List[str]] = SetOpt,
            run_name: Optional[str] = RunOpt, n_samples: Optional[int] = typer.Option(None, help="Generations per scale."),
            threads: Optional[int] = ThreadsOpt) -> None:
    """Trigger ratio and G1 misalignment of target-conditioned generations vs guidance."""
    set_threads(threads)
    from ..core.config import resolve
    from ..core.runs import Run
    from ..guard.diffusion.amplify import measure_amplification, plot_curve
    from ..guard.diffusion.config import AmplifyConfig
    from ..guard.diffusion.model import image_grid

    cfg = resolve(AmplifyConfig, config_file=config, sets=set_, n_samples=n_samples)
    m, _, data, ps, trig = _load(model)
    run = Run.create(run_name or f"diffusion-amplify-{_tag(model)}", command="slimguard diffusion amplify", config=cfg)
    res = measure_amplification(m, data, ps, trig, cfg, progress=lambda s: typer.echo(s, err=True))
    plot_curve(res, run.artefact("amplification.png"))
    image_grid([res.generations[w][:12] for w in cfg.guidance], run.artefact("target_generations.png"),
               row_labels=[f"w={w:g}" for w in cfg.guidance])
    _echo_metrics(run, res.to_dict())


@app.command()
def detect(model: Path = ModelOpt, config: Optional[Path] = ConfigOpt, set_: Optional[List[str]] = SetOpt,
           run_name: Optional[str] = RunOpt, threads: Optional[int] = ThreadsOpt) -> None:
    """Spectral signatures / activation clustering on the training data vs fitted on generations (AUROC)."""
    set_threads(threads)
    from ..core.config import resolve
    from ..core.runs import Run
    from ..guard.diffusion.config import DetectConfig
    from ..guard.diffusion.detect import run_detection

    cfg = resolve(DetectConfig, config_file=config, sets=set_)
    m, _, data, ps, trig = _load(model)
    if not ps.poisoned.any():
        from ..core.errors import SlimguardError

        raise SlimguardError(f"model {model} was trained on clean data (poison.rate=0); nothing to detect")
    run = Run.create(run_name or f"diffusion-detect-{_tag(model)}", command="slimguard diffusion detect", config=cfg)
    res, _ = run_detection(m, data, ps, trig, cfg)
    _echo_metrics(run, {"results": [r.__dict__ for r in res]})


@app.command()
def classify(model: Path = ModelOpt, config: Optional[Path] = ConfigOpt, set_: Optional[List[str]] = SetOpt,
             run_name: Optional[str] = RunOpt, keep_frac: Optional[float] = typer.Option(None, help="Pixel-error filter (keep_frac)."),
             threads: Optional[int] = ThreadsOpt) -> None:
    """The diffusion model as a classifier, with/without pixel-error filtering, vs a CNN (CACC, ASR)."""
    set_threads(threads)
    from ..core.config import resolve
    from ..core.runs import Run
    from ..guard.diffusion.config import ClassifyConfig
    from ..guard.diffusion.diffclassify import run_classification

    cfg = resolve(ClassifyConfig, config_file=config, sets=set_, keep_frac=keep_frac)
    m, _, data, ps, trig = _load(model)
    run = Run.create(run_name or f"diffusion-classify-{_tag(model)}", command="slimguard diffusion classify", config=cfg)
    res = run_classification(m, data, ps, trig, cfg)
    _echo_metrics(run, {"results": [r.__dict__ for r in res]})
