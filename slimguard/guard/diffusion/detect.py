"""Poisoned-data detection on training data vs on generations (BiBadDiff, Pan et al., NeurIPS 2024).

Two classic detectors inspect the penultimate features of a CNN trained on the poisoned
data, restricted to the target class: spectral signatures (Tran et al., 2018: outliers
along the top singular direction) and activation clustering (Chen et al., 2018: 2-means
after PCA, the small cluster is suspect). Both are run (a) on the training data, and (b)
fitted on target-conditioned GENERATIONS and then used to score the training data. In
(b) amplification turns the usual "minority = poison" rule around, so the suspect side is
the one the generations moved towards: the cluster whose share grows from training data
to generations, or the side of the top direction away from the training mean. (c) fits on
training rows and generations pooled, with the same "moved towards" rule. AUROC is
always measured on the training set (true poisoned indices); generations are also scored
against the trigger detector's labels. AUROC comes from :mod:`slimguard.core.metrics`: NaN
with one class only, and a NaN score (degenerate features) ranks as the least suspicious.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...core.metrics import auroc  # shared and NaN-safe; tests and callers import it from here too


@dataclass
class DetectionResult:
    method: str  # spectral | activation-clustering
    fit_on: str  # train | generations | train+generations
    auroc_train: float  # poisoned vs clean target-class training images
    auroc_generations: float  # triggered vs clean generations (trigger-detector labels); nan if one class
    n_train: int
    n_poisoned: int


def _top_dir(f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mu = f.mean(0)
    _, _, vt = np.linalg.svd(f - mu, full_matrices=False)
    return mu, vt[0]


def spectral_train(f_train: np.ndarray) -> np.ndarray:
    mu, v = _top_dir(f_train)
    return ((f_train - mu) @ v) ** 2


def spectral_from_generations(f_gen: np.ndarray, f_score: np.ndarray, f_train: np.ndarray) -> np.ndarray:
    mu, v = _top_dir(f_gen)
    # generations hold more poison than the training data, so poison lies on the far side
    # of the generations' mean from the training mean
    sign = -np.sign(((f_train - mu) @ v).mean()) or 1.0
    return sign * ((f_score - mu) @ v)


def _ac_fit(f: np.ndarray, dims: int, seed: int):
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    pca = PCA(n_components=min(dims, f.shape[1], len(f) - 1), random_state=seed).fit(f)
    km = KMeans(2, n_init=10, random_state=seed).fit(pca.transform(f))
    return pca, km


def _margin(pca, km, f: np.ndarray, suspect: int) -> np.ndarray:
    d = np.linalg.norm(pca.transform(f)[:, None, :] - km.cluster_centers_[None], axis=-1)
    return d[:, 1 - suspect] - d[:, suspect]


def ac_train(f_train: np.ndarray, dims: int, seed: int) -> np.ndarray:
    pca, km = _ac_fit(f_train, dims, seed)
    suspect = int(np.argmin(np.bincount(km.labels_, minlength=2)))
    return _margin(pca, km, f_train, suspect)


def ac_from_generations(f_gen: np.ndarray, f_score: np.ndarray, f_train: np.ndarray, dims: int, seed: int) -> np.ndarray:
    pca, km = _ac_fit(f_gen, dims, seed)
    share_gen = np.bincount(km.labels_, minlength=2) / len(f_gen)
    share_train = np.bincount(km.predict(pca.transform(f_train)), minlength=2) / len(f_train)
    suspect = int(np.argmax(share_gen / np.maximum(share_train, 1e-6)))
    return _margin(pca, km, f_score, suspect)


def spectral_pooled(f_gen: np.ndarray, f_train: np.ndarray, f_score: np.ndarray) -> np.ndarray:
    mu, v = _top_dir(np.concatenate([f_train, f_gen]))
    sign = np.sign(((f_gen - mu) @ v).mean() - ((f_train - mu) @ v).mean()) or 1.0
    return sign * ((f_score - mu) @ v)


def ac_pooled(f_gen: np.ndarray, f_train: np.ndarray, f_score: np.ndarray, dims: int, seed: int) -> np.ndarray:
    pca, km = _ac_fit(np.concatenate([f_train, f_gen]), dims, seed)
    lab_tr, lab_gen = km.labels_[:len(f_train)], km.labels_[len(f_train):]
    share_gen = np.bincount(lab_gen, minlength=2) / len(f_gen)
    share_train = np.bincount(lab_tr, minlength=2) / len(f_train)
    suspect = int(np.argmax(share_gen / np.maximum(share_train, 1e-6)))
    return _margin(pca, km, f_score, suspect)


def detect_poison(f_train: np.ndarray, is_poisoned: np.ndarray, f_gen: np.ndarray | None = None,
                  gen_triggered: np.ndarray | None = None, *, method: str = "both", pca_dims: int = 10,
                  seed: int = 0) -> list[DetectionResult]:
    """AUROCs of each detector, fitted on the training features and (if given) on generations'."""
    methods = ["spectral", "activation-clustering"] if method == "both" else [method]
    n, k = len(f_train), int(np.asarray(is_poisoned).sum())
    out = []
    nan = float("nan")
    for m in methods:
        if m == "spectral":
            s_tr = spectral_train(f_train)
        else:
            s_tr = ac_train(f_train, pca_dims, seed)
        out.append(DetectionResult(m, "train", auroc(s_tr, is_poisoned), nan, n, k))
        if f_gen is not None:
            if m == "spectral":
                s_tr = spectral_from_generations(f_gen, f_train, f_train)
                s_gen = spectral_from_generations(f_gen, f_gen, f_train)
            else:
                s_tr = ac_from_generations(f_gen, f_train, f_train, pca_dims, seed)
                s_gen = ac_from_generations(f_gen, f_gen, f_train, pca_dims, seed)
            a_gen = auroc(s_gen, gen_triggered) if gen_triggered is not None else nan
            out.append(DetectionResult(m, "generations", auroc(s_tr, is_poisoned), a_gen, n, k))
            if m == "spectral":
                s_tr, s_gen = spectral_pooled(f_gen, f_train, f_train), spectral_pooled(f_gen, f_train, f_gen)
            else:
                s_tr = ac_pooled(f_gen, f_train, f_train, pca_dims, seed)
                s_gen = ac_pooled(f_gen, f_train, f_gen, pca_dims, seed)
            a_gen = auroc(s_gen, gen_triggered) if gen_triggered is not None else nan
            out.append(DetectionResult(m, "train+generations", auroc(s_tr, is_poisoned), a_gen, n, k))
    return out


def run_detection(model, data, ps, trigger, cfg, *, cnn=None, generations: np.ndarray | None = None,
                  detector=None) -> tuple[list[DetectionResult], np.ndarray]:
    """End to end: CNN on the poisoned data, features, generations at ``cfg.guidance``, detectors."""
    import torch

    from .classifiers import train_cnn, train_trigger_detector
    from .model import sample

    cnn = cnn or train_cnn(ps.x, ps.y, data.num_classes, cfg.cnn, seed=cfg.seed)
    if generations is None:
        generations = sample(model, [ps.target] * cfg.n_samples, guidance=cfg.guidance, steps=cfg.ddim_steps,
                             generator=torch.Generator().manual_seed(cfg.seed))
    detector = detector or train_trigger_detector(data.x_train, trigger, cfg.cnn, seed=cfg.seed + 1)
    # one row per unique training image: duplicates would inflate both classes' counts
    rows = np.flatnonzero(ps.y == ps.target)
    _, first = np.unique(ps.source_index[rows], return_index=True)
    rows = rows[first]
    res = detect_poison(cnn.features(ps.x[rows]), ps.poisoned[rows], cnn.features(generations),
                        detector.predict(generations), method=cfg.method, pca_dims=cfg.pca_dims, seed=cfg.seed)
    return res, generations
