"""The diffusion-poisoning verbs (BiBadDiff), ``slimguard diffusion poison | train | sample | amplify |
detect | classify``: each owns its run folder; the analyses read a ``diffusion train`` run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from ...core.commands import Flag, Input, command
from ...core.errors import ConfigError, SlimguardError
from ...core.runs import Run, atomic_write_json, safe_run_name
from .config import AmplifyConfig, ClassifyConfig, DetectConfig, PoisonDataConfig, SampleConfig, TrainConfig

_MODEL = Input("--model", "model", "A `slimguard diffusion train` run directory (or its model/ folder).",
               required=True, short="-m")


def _tag(model_dir: str | Path) -> str:
    p = Path(model_dir)
    return p.parent.name if p.name == "model" else p.name


def _named(prefix: str):
    return lambda cfg, model=None, **_: safe_run_name(prefix, _tag(model or "model"))


def load_trained(model_dir: str | Path):
    """(model, train config, data, poisoned set, trigger) of a `diffusion train` run: what the analyses read."""
    from .model import load_model
    from .poison import make_trigger
    from .train import training_data_of

    model = load_model(model_dir)
    tcfg, data, ps = training_data_of(model)
    return model, tcfg, data, ps, make_trigger(tcfg.poison, tcfg.data.image_size)


def _brief(m: dict) -> str:
    return json.dumps(m, default=str)[:600]


@command("diffusion poison", config=PoisonDataConfig, resumable=False,
         run_name=lambda cfg: safe_run_name("diffusion-poison", cfg.poison.trigger, f"{cfg.poison.rate:g}"),
         flags=(Flag("--rate", "poison.rate"), Flag("--target", "poison.target"), Flag("--trigger", "poison.trigger")),
         summary=_brief)
def poison_command(cfg: PoisonDataConfig, run: Run) -> dict:
    """Poison the training data only: stamp a trigger on non-target images, relabel, record indices."""
    from .model import image_grid
    from .poison import load_data, poison_dataset

    data = load_data(cfg.data)
    ps = poison_dataset(data.x_train, data.y_train, cfg.poison, data.num_classes)
    np.savez_compressed(run.artefact("poisoned.npz"), x=ps.x, y=ps.y, poisoned=ps.poisoned,
                        source_index=ps.source_index, poisoned_indices=ps.poisoned_indices)
    atomic_write_json(run.path / "poisoned_indices.json", ps.poisoned_indices.tolist())
    if cfg.preview:
        image_grid([ps.x[ps.poisoned][:cfg.preview], data.x_train[data.y_train == cfg.poison.target][:cfg.preview]],
                   run.artefact("poisoned_preview.png"), row_labels=["poisoned", "clean target"])
    return {"data": data.name, **ps.stats}


@command("diffusion train", config=TrainConfig,
         run_name=lambda cfg: safe_run_name("diffusion-train", cfg.poison.trigger, f"{cfg.poison.rate:g}", f"s{cfg.seed}"),
         flags=(Flag("--steps", "steps"),), summary=_brief)
def train_command(cfg: TrainConfig, run: Run) -> dict:
    """Train a class-conditional DDPM (CFG label drop) on the poisoned data; checkpoints + --resume."""
    from .train import train_diffusion

    res = train_diffusion(cfg, run.path, resume=run.resumed, log=run.log, progress=run.progress)
    return {"steps": res.steps, "train_seconds": res.seconds, "train_cpu_seconds": res.cpu_seconds,
            "final_loss": res.final_loss, "model_dir": str(res.model_dir), **res.poisoned.stats}


@command("diffusion sample", config=SampleConfig, resumable=False, run_name=_named("diffusion-sample"),
         flags=(Flag("--n-per-class", "n_per_class"),), inputs=(_MODEL,), summary=_brief)
def sample_command(cfg: SampleConfig, run: Run, model: str) -> dict:
    """Sample grids per class and guidance scale (DDIM)."""
    import torch

    from .model import image_grid, load_model
    from .model import sample as draw

    m = load_model(model)
    classes = cfg.classes if cfg.classes is not None else list(range(m.num_classes))
    bad = [c for c in classes if not 0 <= c < m.num_classes]
    if bad:
        raise ConfigError(f"config key 'classes': {bad} out of range 0..{m.num_classes - 1}")
    g = torch.Generator().manual_seed(cfg.seed)
    names = m.meta.get("class_names", [str(c) for c in range(m.num_classes)])
    out = {}
    for w in cfg.guidance:
        x = draw(m, np.repeat(classes, cfg.n_per_class), guidance=w, steps=cfg.ddim_steps, generator=g)
        out[f"w{w:g}"] = x
        image_grid([x[i * cfg.n_per_class:(i + 1) * cfg.n_per_class] for i in range(len(classes))],
                   run.artefact(f"grid_w{w:g}.png"), row_labels=[names[c] for c in classes], title=f"guidance w={w:g}")
    np.savez_compressed(run.artefact("samples.npz"), classes=np.array(classes), **out)
    return {"model": str(model), "classes": classes, "guidance": cfg.guidance, "n_per_class": cfg.n_per_class}


@command("diffusion amplify", config=AmplifyConfig, resumable=False, run_name=_named("diffusion-amplify"),
         flags=(Flag("--n-samples", "n_samples"),), inputs=(_MODEL,), summary=_brief)
def amplify_command(cfg: AmplifyConfig, run: Run, model: str) -> dict:
    """Trigger ratio and G1 misalignment of target-conditioned generations vs guidance."""
    from .amplify import measure_amplification, plot_curve
    from .model import image_grid

    m, _, data, ps, trig = load_trained(model)
    res = measure_amplification(m, data, ps, trig, cfg,
                                progress=(lambda s: print(s, file=sys.stderr, flush=True)) if run.progress else None)
    plot_curve(res, run.artefact("amplification.png"))
    image_grid([res.generations[w][:12] for w in cfg.guidance], run.artefact("target_generations.png"),
               row_labels=[f"w={w:g}" for w in cfg.guidance])
    return res.to_dict()


@command("diffusion detect", config=DetectConfig, resumable=False, run_name=_named("diffusion-detect"),
         inputs=(_MODEL,), summary=_brief)
def detect_command(cfg: DetectConfig, run: Run, model: str) -> dict:
    """Spectral signatures / activation clustering on the training data vs fitted on generations (AUROC)."""
    from .detect import run_detection

    m, _, data, ps, trig = load_trained(model)
    if not ps.poisoned.any():
        raise SlimguardError(f"model {model} was trained on clean data (poison.rate=0); nothing to detect")
    res, _ = run_detection(m, data, ps, trig, cfg)
    return {"results": [r.__dict__ for r in res]}


@command("diffusion classify", config=ClassifyConfig, resumable=False, run_name=_named("diffusion-classify"),
         flags=(Flag("--keep-frac", "keep_frac"),), inputs=(_MODEL,), summary=_brief)
def classify_command(cfg: ClassifyConfig, run: Run, model: str) -> dict:
    """The diffusion model as a classifier, with/without pixel-error filtering, vs a CNN (CACC, ASR)."""
    from .diffclassify import run_classification

    m, _, data, ps, trig = load_trained(model)
    return {"results": [r.__dict__ for r in run_classification(m, data, ps, trig, cfg)]}
