"""Measurement classifiers for BiBadDiff (Pan et al., NeurIPS 2024).

- a small CNN, trained here on clean data (judges G1 misalignment: does a
  target-conditioned generation look like the target class?) or on the poisoned data
  (the baseline whose CACC/ASR the diffusion classifier is compared with, and whose
  features feed the poisoned-data detectors);
- a trigger detector: the same CNN trained to tell triggered from clean images, checked
  against an exact-pattern test that needs no training.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import CNNConfig
from .poison import Trigger, validate_images


def _net(num_classes: int, width: int, size: int):
    import torch.nn as nn

    class SmallCNN(nn.Module):
        def __init__(self):
            super().__init__()
            w = width
            self.body = nn.Sequential(
                nn.Conv2d(1, w, 3, padding=1), nn.ReLU(), nn.Conv2d(w, 2 * w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                nn.Linear(2 * w * (size // 4) ** 2, 128), nn.ReLU())
            self.head = nn.Linear(128, num_classes)

        def forward(self, x):
            return self.head(self.body(x))

    return SmallCNN()


@dataclass
class CNN:
    net: object
    num_classes: int
    image_size: int

    def _batches(self, x: np.ndarray, fn, bs: int = 512) -> np.ndarray:
        import torch

        validate_images(x, self.image_size)
        self.net.eval()
        out = []
        with torch.no_grad():
            for i in range(0, len(x), bs):
                xb = torch.from_numpy(np.asarray(x[i:i + bs], np.float32)).unsqueeze(1)
                out.append(fn(xb.to(self.device)).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0,))

    @property
    def device(self):
        return next(self.net.parameters()).device

    def probs(self, x: np.ndarray) -> np.ndarray:
        return self._batches(x, lambda t: self.net(t).softmax(-1))

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.probs(x).argmax(-1)

    def features(self, x: np.ndarray) -> np.ndarray:
        """Penultimate activations (what activation clustering and spectral signatures inspect)."""
        return self._batches(x, self.net.body)


def train_cnn(x: np.ndarray, y: np.ndarray, num_classes: int, cfg: CNNConfig, *, seed: int = 0,
              device: str | None = None) -> CNN:
    import torch

    from ...core.models import resolve_device

    validate_images(x)
    dev = torch.device(resolve_device(device))
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # nn.Module init uses the global generator
    net = _net(num_classes, cfg.width, x.shape[1]).to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    xt = torch.from_numpy(np.asarray(x, np.float32)).unsqueeze(1).to(dev)
    yt = torch.from_numpy(np.asarray(y, np.int64)).to(dev)
    net.train()
    for _ in range(cfg.epochs):
        order = torch.randperm(len(yt), generator=g).to(dev)
        for i in range(0, len(order), cfg.batch_size):
            b = order[i:i + cfg.batch_size]
            loss = torch.nn.functional.cross_entropy(net(xt[b]), yt[b])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return CNN(net.eval(), num_classes, x.shape[1])


@dataclass
class TriggerDetector:
    cnn: CNN
    heldout_accuracy: float  # on freshly stamped vs clean held-out images

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.cnn.predict(x).astype(bool)


def train_trigger_detector(x_clean: np.ndarray, trigger: Trigger, cfg: CNNConfig, *, seed: int = 0) -> TriggerDetector:
    """Half of the images get the trigger; 20% are held out to report the detector's accuracy."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x_clean))
    x = x_clean[order].copy()
    lab = np.zeros(len(x), np.int64)
    lab[::2] = 1
    x[lab == 1] = trigger.apply(x[lab == 1])
    cut = int(0.8 * len(x))
    cnn = train_cnn(x[:cut], lab[:cut], 2, cfg, seed=seed)
    acc = float((cnn.predict(x[cut:]) == lab[cut:]).mean())
    return TriggerDetector(cnn, acc)


def exact_score(x: np.ndarray, trigger: Trigger) -> np.ndarray:
    """Patch: max |pixel - pattern| inside the patch (0 = exact). Blend: 1 - correlation of
    the image's high-pass residual with the pattern's (blended noise is high-frequency)."""
    validate_images(x, trigger.mask.shape[0])
    if trigger.box is not None:
        r0, r1, c0, c1 = trigger.box
        return np.abs(x[:, r0:r1, c0:c1] - trigger.pattern[r0:r1, c0:c1]).reshape(len(x), -1).max(1)

    def hp(a):
        from scipy.ndimage import uniform_filter

        return a - uniform_filter(a, size=(1, 3, 3) if a.ndim == 3 else 3, mode="reflect")

    r = hp(x).reshape(len(x), -1)
    p = hp(trigger.pattern).reshape(-1)
    r = r - r.mean(1, keepdims=True)
    p = p - p.mean()
    corr = (r @ p) / (np.linalg.norm(r, axis=1) * np.linalg.norm(p) + 1e-8)
    return 1.0 - corr


def exact_pattern_check(x: np.ndarray, trigger: Trigger, tol: float | None = None) -> np.ndarray:
    """True where the trigger is present within ``tol`` (see :func:`exact_score`; default: the trigger's own)."""
    return exact_score(x, trigger) <= (trigger.exact_tol if tol is None else tol)


def pattern_check(x: np.ndarray, trigger: Trigger, min_corr: float = 0.65, min_std: float = 0.08) -> np.ndarray:
    """A contrast- and brightness-invariant version of the exact check, for generations.

    Generated triggers come out as a blurred, lower-contrast checkerboard that the strict
    pixel test rejects; correlation with the pattern inside the patch (with some contrast
    present, so flat dark corners do not count) still identifies them. Blend: as exact.
    """
    if trigger.box is None:
        return exact_pattern_check(x, trigger)
    validate_images(x, trigger.mask.shape[0])
    r0, r1, c0, c1 = trigger.box
    a = x[:, r0:r1, c0:c1].reshape(len(x), -1)
    p = trigger.pattern[r0:r1, c0:c1].reshape(-1)
    a_c, p_c = a - a.mean(1, keepdims=True), p - p.mean()
    sd = a.std(1)
    corr = (a_c @ p_c) / (np.linalg.norm(a_c, axis=1) * np.linalg.norm(p_c) + 1e-8)
    return (corr >= min_corr) & (sd >= min_std)
