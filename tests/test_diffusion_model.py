"""BiBadDiff generator on a tiny random UNet: training, resume, CFG sampling, diffusion classifier."""

import numpy as np
import pytest
import torch

from slimguard.core.errors import SlimguardError
from slimguard.guard.diffusion.config import PoisonConfig, TrainConfig
from slimguard.guard.diffusion.diffclassify import diffusion_errors
from slimguard.guard.diffusion.model import load_model, sample
from slimguard.guard.diffusion.poison import ImageSet, poison_dataset
from slimguard.guard.diffusion.train import train_diffusion


def _tiny_cfg(**kw):
    base = dict(data={"image_size": 8, "n_train": 100}, poison={"rate": 0.1, "target": 1},
                model={"channels": [8, 16], "norm_groups": 4}, steps=4, batch_size=8, warmup=1,
                checkpoint_every=2, train_timesteps=50)
    base.update(kw)
    return TrainConfig(**base)


def _tiny_data(cfg):
    rng = np.random.default_rng(0)
    x = rng.random((40, 8, 8)).astype(np.float32)
    y = np.arange(40) % 3
    data = ImageSet("synthetic", ["a", "b", "c"], x, y, x[:12], y[:12])
    return data, poison_dataset(x, y, cfg.poison, 3)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    cfg = _tiny_cfg()
    d = tmp_path_factory.mktemp("tiny")
    return cfg, d, train_diffusion(cfg, d, progress=False, data=_tiny_data(cfg))


def test_train_writes_model_checkpoint_and_indices(trained):
    cfg, d, res = trained
    assert res.steps == 4 and len(res.losses) == 4 and np.isfinite(res.final_loss)
    for f in ("model/unet/diffusion_pytorch_model.safetensors", "model/diffusion.json", "checkpoint.pt", "poison.npz"):
        assert (d / f).is_file(), f
    assert len(np.load(d / "poison.npz")["poisoned_indices"]) == 4


def test_resume_continues_bit_for_bit(tmp_path, trained):
    cfg, _, full = trained
    train_diffusion(cfg, tmp_path, progress=False, data=_tiny_data(cfg), stop_after=2)
    res = train_diffusion(cfg, tmp_path, progress=False, data=_tiny_data(cfg), resume=True)
    assert res.losses == full.losses
    for a, b in zip(res.model.unet.parameters(), full.model.unet.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("change, fields", [({"lr": 1e-3}, "lr"), ({"seed": 5}, "seed")])
def test_resume_refuses_a_different_config(tmp_path, trained, change, fields):
    cfg, _, _ = trained
    train_diffusion(cfg, tmp_path, progress=False, data=_tiny_data(cfg), stop_after=2)
    with pytest.raises(SlimguardError, match=rf"different config \(fields: {fields}\)"):
        other = cfg.model_copy(update=change)
        train_diffusion(other, tmp_path, progress=False, data=_tiny_data(other), resume=True)


def test_resume_refuses_other_training_images(tmp_path, trained):
    cfg, _, _ = trained
    train_diffusion(cfg, tmp_path, progress=False, data=_tiny_data(cfg), stop_after=2)
    data, _ = _tiny_data(cfg)
    other = ImageSet(data.name, data.class_names, data.x_train[::-1].copy(), data.y_train, data.x_test, data.y_test)
    with pytest.raises(SlimguardError, match=r"different config \(fields: train_data\)"):
        train_diffusion(cfg, tmp_path, progress=False, data=(other, poison_dataset(other.x_train, other.y_train,
                                                                                      cfg.poison, 3)), resume=True)


@pytest.mark.parametrize("damage, message", [
    (lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]), "not a slimguard checkpoint or truncated"),
    (lambda p: torch.save({"unet": {}, "step": 2}, p), "not a slimguard checkpoint"),  # the format before this one
    (lambda p: p.write_bytes(b""), "not a slimguard checkpoint or truncated"),
])
def test_resume_from_a_truncated_or_foreign_checkpoint_is_one_line(tmp_path, trained, damage, message):
    # these used to end in a traceback (KeyError / zip reader error)
    cfg, _, _ = trained
    train_diffusion(cfg, tmp_path, progress=False, data=_tiny_data(cfg), stop_after=2)
    damage(tmp_path / "checkpoint.pt")
    with pytest.raises(SlimguardError, match=message) as e:
        train_diffusion(cfg, tmp_path, progress=False, data=_tiny_data(cfg), resume=True)
    assert "\n" not in str(e.value) and str(tmp_path / "checkpoint.pt") in str(e.value)


def test_resume_without_checkpoint_is_an_error(tmp_path, trained):
    cfg, _, _ = trained
    with pytest.raises(SlimguardError, match="no checkpoint"):
        train_diffusion(cfg, tmp_path, progress=False, data=_tiny_data(cfg), resume=True)


@pytest.mark.parametrize("guidance", [0.0, 2.0])
def test_sample_shape_range_and_determinism(trained, guidance):
    _, d, res = trained
    m = load_model(d)  # the saved copy samples like the in-memory one
    a = sample(m, [0, 1, 2], guidance=guidance, steps=3, generator=torch.Generator().manual_seed(0))
    b = sample(res.model, [0, 1, 2], guidance=guidance, steps=3, generator=torch.Generator().manual_seed(0))
    assert a.shape == (3, 8, 8) and a.min() >= 0 and a.max() <= 1
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_guidance_changes_samples(trained):
    _, _, res = trained
    a = sample(res.model, [1, 1], guidance=0.0, steps=3, generator=torch.Generator().manual_seed(0))
    b = sample(res.model, [1, 1], guidance=5.0, steps=3, generator=torch.Generator().manual_seed(0))
    assert np.abs(a - b).max() > 1e-4


@pytest.mark.parametrize("labels", [[3], [-1]])
def test_sample_rejects_out_of_range_labels(trained, labels):
    with pytest.raises(SlimguardError, match="class labels must be in 0..2"):
        sample(trained[2].model, labels, steps=2)


def test_load_model_rejects_non_model_dir(tmp_path):
    with pytest.raises(SlimguardError, match="not a diffusion model folder"):
        load_model(tmp_path)


def test_diffusion_errors_filtering(trained):
    _, _, res = trained
    x = np.random.default_rng(1).random((5, 8, 8)).astype(np.float32)
    e = diffusion_errors(res.model, x, keep_fracs=(1.0, 0.9), draws=2, batch_size=12)
    assert e[1.0].shape == (5, 3) and np.isfinite(e[1.0]).all()
    # keeping only the smallest 90% of pixel errors can only lower the mean
    assert (e[0.9] <= e[1.0] + 1e-9).all() and (e[0.9] < e[1.0]).any()
    with pytest.raises(SlimguardError):
        diffusion_errors(res.model, x[:, :4, :4])
