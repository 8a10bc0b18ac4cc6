"""Trigger amplification and G1 misalignment in poisoned diffusion models (BiBadDiff, Pan et al., NeurIPS 2024).

Target-conditioned generations are sampled at several guidance scales and judged by two
trained classifiers: a clean CNN (a generation it does not call the target class is
misaligned, "G1") and a trigger detector (whose verdict is cross-checked with the
exact-pattern test). The trigger ratio is compared with BOTH the global poison rate and
the within-target-class trigger fraction of the training data; the second is the stricter
baseline, because the model only ever saw triggers under the target label. A replication
statistic tells whether duplicated poisoned images are reproduced more often.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .classifiers import CNN, TriggerDetector, exact_pattern_check, pattern_check, train_cnn, train_trigger_detector
from .config import AmplifyConfig
from .model import DiffusionModel, sample
from .poison import ImageSet, PoisonedSet, Trigger


@dataclass
class GuidancePoint:
    guidance: float
    n: int
    trigger_ratio: float  # trigger detector
    exact_ratio: float  # strict exact-pattern check (pixel tolerance)
    pattern_ratio: float  # contrast-invariant pattern check (correlation inside the patch)
    detector_exact_agreement: float
    detector_pattern_agreement: float
    misalignment: float  # clean CNN does not predict the target
    vs_global: float  # trigger_ratio / global poison rate
    vs_within_class: float  # trigger_ratio / within-class trigger fraction


@dataclass
class Replication:
    """Generations whose nearest training image (cosine, pixels) is a near-copy, by group."""

    threshold: float
    per_image_duplicated: float  # replicas of duplicated poisoned images / unique duplicated images
    per_image_single: float  # replicas of non-duplicated poisoned images / unique such images
    per_image_clean: float  # replicas of clean target images / clean target images
    n_generations: int


@dataclass
class AmplifyResult:
    target: int
    global_rate: float
    within_class_fraction: float
    detector_heldout_accuracy: float
    exact_on_poisoned_train: float  # sanity: the exact check fires on the stamped training images
    clean_cnn_accuracy: float
    points: list[GuidancePoint]
    control_class: int = -1  # a non-target class sampled at the largest guidance, as a false-positive control
    control_trigger_ratio: float = float("nan")
    control_pattern_ratio: float = float("nan")
    replication: Replication | None = None
    generations: dict = field(default_factory=dict, repr=False)  # guidance -> [N, S, S]

    def to_dict(self) -> dict:
        import dataclasses

        d = dataclasses.asdict(self)
        d.pop("generations")
        return d


def _unit(x: np.ndarray) -> np.ndarray:
    f = x.reshape(len(x), -1).astype(np.float32)
    f = f - f.mean(1, keepdims=True)
    return f / (np.linalg.norm(f, axis=1, keepdims=True) + 1e-8)


def replication(gens: np.ndarray, ps: PoisonedSet, threshold: float) -> Replication:
    """Nearest training neighbour (target-labelled rows only) of each generation."""
    rows = np.flatnonzero(ps.y == ps.target)
    src = ps.source_index[rows]
    uniq, first = np.unique(src, return_index=True)
    rows = rows[first]  # one row per unique training image, so duplicates are not double-counted
    sim = _unit(gens) @ _unit(ps.x[rows]).T
    nn, best = sim.argmax(1), sim.max(1)
    hit = best >= threshold
    pois, dup = ps.poisoned[rows], ps.duplicated[rows]

    def per(group: np.ndarray) -> float:
        n = int(group.sum())
        return float(np.isin(nn[hit], np.flatnonzero(group)).sum() / n) if n else float("nan")

    return Replication(threshold, per(pois & dup), per(pois & ~dup), per(~pois), len(gens))


def measure_amplification(model: DiffusionModel, data: ImageSet, ps: PoisonedSet, trigger: Trigger,
                          cfg: AmplifyConfig, *, clean_cnn: CNN | None = None,
                          detector: TriggerDetector | None = None, progress=None) -> AmplifyResult:
    import torch

    clean_cnn = clean_cnn or train_cnn(data.x_train, data.y_train, data.num_classes, cfg.cnn, seed=cfg.seed)
    detector = detector or train_trigger_detector(data.x_train, trigger, cfg.cnn, seed=cfg.seed + 1)
    global_rate = ps.stats["global_poison_rate"]
    within = ps.stats["within_class_trigger_fraction"]
    g = torch.Generator().manual_seed(cfg.seed)
    points, gens = [], {}
    for w in cfg.guidance:
        x = sample(model, [ps.target] * cfg.n_samples, guidance=w, steps=cfg.ddim_steps, generator=g)
        gens[w] = x
        det = detector.predict(x)
        ex = exact_pattern_check(x, trigger, cfg.exact_tol)
        pat = pattern_check(x, trigger)
        ratio = float(det.mean())
        points.append(GuidancePoint(w, len(x), ratio, float(ex.mean()), float(pat.mean()), float((det == ex).mean()),
                                    float((det == pat).mean()),
                                    float((clean_cnn.predict(x) != ps.target).mean()),
                                    ratio / global_rate if global_rate else float("nan"),
                                    ratio / within if within else float("nan")))
        if progress:
            progress(f"guidance {w:g}: trigger ratio {ratio:.3f} (pattern check {pat.mean():.3f}, within-class {within:.3f}), "
                     f"misalignment {points[-1].misalignment:.3f}")
    ctrl = (ps.target + 1) % data.num_classes
    xc = sample(model, [ctrl] * cfg.n_samples, guidance=max(cfg.guidance), steps=cfg.ddim_steps, generator=g)
    ctrl_det, ctrl_pat = float(detector.predict(xc).mean()), float(pattern_check(xc, trigger).mean())
    if progress:
        progress(f"control class {ctrl} at w={max(cfg.guidance):g}: trigger ratio {ctrl_det:.3f}, pattern check {ctrl_pat:.3f}")
    rep = replication(np.concatenate(list(gens.values())), ps, cfg.replication_threshold) if ps.poisoned.any() else None
    clean_acc = float((clean_cnn.predict(data.x_test) == data.y_test).mean())
    exact_train = float(exact_pattern_check(ps.x[ps.poisoned], trigger, cfg.exact_tol).mean()) if ps.poisoned.any() else float("nan")
    return AmplifyResult(ps.target, global_rate, within, detector.heldout_accuracy, exact_train, clean_acc, points,
                         ctrl, ctrl_det, ctrl_pat, rep, gens)


def plot_curve(res: AmplifyResult, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ws = [p.guidance for p in res.points]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(ws, [p.trigger_ratio for p in res.points], "o-", label="trigger ratio (detector)")
    ax.plot(ws, [p.exact_ratio for p in res.points], "s--", label="trigger ratio (strict exact check)")
    ax.plot(ws, [p.pattern_ratio for p in res.points], "d--", label="trigger ratio (pattern correlation)")
    ax.plot(ws, [p.misalignment for p in res.points], "^-", label="G1 misalignment")
    ax.axhline(res.within_class_fraction, color="r", ls=":", label="within-class trigger fraction")
    ax.axhline(res.global_rate, color="gray", ls=":", label="global poison rate")
    ax.set_xlabel("guidance scale w")
    ax.set_ylabel("share of target-conditioned generations")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
