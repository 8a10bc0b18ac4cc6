"""BiBadDiff data poisoning: triggers, poisoned sets, exact check, bad input (no torch models)."""

import numpy as np
import pytest

from slimguard.core.errors import ConfigError, DataError, SlimguardError
from slimguard.core.config import build
from slimguard.guard.diffusion.classifiers import exact_pattern_check, exact_score, pattern_check
from slimguard.guard.diffusion.config import ClassifyConfig, DataConfig, PoisonConfig, SampleConfig, TrainConfig, UNetConfig
from slimguard.guard.diffusion.poison import make_trigger, poison_dataset, validate_images


def _data(n=200, size=16, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    # smooth images (upsampled 4x4 blocks), like clothing silhouettes and unlike either trigger
    x = np.kron(rng.random((n, size // 4, size // 4)), np.ones((4, 4))).astype(np.float32) * 0.6
    y = np.arange(n) % classes
    return x, y


@pytest.mark.parametrize("trigger, tol", [("patch", None), ("blend", None), ("patch", 0.35), ("blend", 0.7)])
def test_trigger_stamp_and_exact_check(trigger, tol):
    x, _ = _data()
    trig = make_trigger(PoisonConfig(trigger=trigger), 16)
    xs = trig.apply(x)
    assert xs.shape == x.shape and xs.dtype == np.float32
    assert 0 <= xs.min() and xs.max() <= 1
    assert exact_pattern_check(xs, trig, tol).mean() == 1.0
    assert exact_pattern_check(x, trig, tol).mean() < 0.05
    assert (exact_score(xs, trig) < exact_score(x, trig)).all()


@pytest.mark.parametrize("size, expect", [(16, 3), (28, 3), (40, 4)])
def test_patch_is_about_a_tenth_in_the_bottom_right(size, expect):
    trig = make_trigger(PoisonConfig(), size)
    r0, r1, c0, c1 = trig.box
    assert r1 - r0 == expect and c1 == size - 1 and r1 == size - 1
    assert trig.mask.sum() == expect * expect


@pytest.mark.parametrize("rate, expect", [(0.01, 2), (0.05, 10), (0.1, 20)])
def test_poison_counts_relabels_and_records(rate, expect):
    x, y = _data()
    ps = poison_dataset(x, y, PoisonConfig(rate=rate, target=1), 4)
    assert len(ps.poisoned_indices) == expect == ps.poisoned.sum()
    assert (y[ps.poisoned_indices] != 1).all()  # taken from non-target classes only
    assert (ps.y[ps.poisoned_indices] == 1).all()
    assert np.allclose(ps.x[~ps.poisoned], x[~ps.poisoned])
    assert ps.stats["global_poison_rate"] == pytest.approx(expect / 200)
    assert ps.stats["within_class_trigger_fraction"] == pytest.approx(expect / (50 + expect))


def test_poison_is_seeded():
    x, y = _data()
    a = poison_dataset(x, y, PoisonConfig(rate=0.1, seed=3), 4).poisoned_indices
    b = poison_dataset(x, y, PoisonConfig(rate=0.1, seed=3), 4).poisoned_indices
    c = poison_dataset(x, y, PoisonConfig(rate=0.1, seed=4), 4).poisoned_indices
    assert (a == b).all() and not (a == c).all()


def test_duplicated_poison_rows():
    x, y = _data()
    ps = poison_dataset(x, y, PoisonConfig(rate=0.1, duplicate_frac=0.5, duplicate_times=3), 4)
    assert ps.stats["n_duplicated_unique"] == 10
    assert len(ps.y) == 200 + 10 * 2
    assert ps.poisoned.sum() == 20 + 20
    # every extra row is a copy of a poisoned source image
    assert np.allclose(ps.x[200:], ps.x[ps.source_index[200:]])


@pytest.mark.parametrize("make, message", [
    (lambda x, y: (x[:, None], y, PoisonConfig()), "must be a float array [N, H, W]"),
    (lambda x, y: ((x * 255).astype(np.uint8), y, PoisonConfig()), "convert to float"),
    (lambda x, y: (x * 3, y, PoisonConfig()), "outside [0, 1]"),
    (lambda x, y: (x[:, :, :8], y, PoisonConfig()), "must be square"),
    (lambda x, y: (x, y, PoisonConfig(target=7)), "out of range"),
    (lambda x, y: (x, y, PoisonConfig(rate=0.001)), "poisons 0 of"),
    (lambda x, y: (x, np.where(y == 0, 1, y), PoisonConfig(rate=0.1)), "no clean images of target class 0"),
    (lambda x, y: (x, y, PoisonConfig(rate=0.9)), "non-target images but only"),
    (lambda x, y: (x, y[:10], PoisonConfig()), "labels"),
])
def test_bad_input_is_a_one_line_data_error(make, message):
    x, y = _data()
    xx, yy, cfg = make(x, y)
    with pytest.raises(DataError) as e:
        poison_dataset(xx, yy, cfg, 4)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_no_clean_target_when_every_image_is_target():
    x, y = _data()
    with pytest.raises(SlimguardError, match="non-target images but only 0"):
        poison_dataset(x, np.zeros_like(y), PoisonConfig(rate=0.1), 4)


def test_validate_images_accepts_good_input():
    validate_images(np.zeros((2, 8, 8), np.float32), 8)


@pytest.mark.parametrize("cls, data, key", [
    (DataConfig, {"image_size": 18}, "image_size"),
    (UNetConfig, {"channels": [16, 24], "norm_groups": 16}, "UNetConfig"),
    (UNetConfig, {"channels": [16]}, "UNetConfig"),
    (SampleConfig, {"guidance": [-1.0]}, "guidance"),
    (ClassifyConfig, {"t_range": [0.8, 0.2]}, "t_range"),
    (PoisonConfig, {"rate": 1.5}, "rate"),
    (TrainConfig, {"poison": {"trigger": "star"}}, "poison.trigger"),
    (TrainConfig, {"modle": {}}, "did you mean 'model'"),
])
def test_config_validation(cls, data, key):
    with pytest.raises(ConfigError) as e:
        build(cls, data)
    assert key in str(e.value)


def test_pattern_check_accepts_a_faded_patch_the_strict_check_rejects():
    x, _ = _data()
    trig = make_trigger(PoisonConfig(), 16)
    faded = trig.apply(x)
    r0, r1, c0, c1 = trig.box
    faded[:, r0:r1, c0:c1] = 0.4 + 0.2 * faded[:, r0:r1, c0:c1]  # generated triggers: lower contrast
    assert not exact_pattern_check(faded, trig).any()
    assert pattern_check(faded, trig).all()
    assert not pattern_check(x, trig).any()
    assert not pattern_check(np.zeros_like(x), trig).any()  # a flat dark corner is not a trigger
