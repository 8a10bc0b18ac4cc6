"""``slimguard diffusion ...``: light import, one-line errors, the poison command's run record."""

import json
import os
import subprocess
import sys

import pytest


def _cli(*args, tmp_path):
    env = dict(os.environ, SLIMGUARD_RUNS=str(tmp_path), SLIMGUARD_THREADS="1")
    return subprocess.run([sys.executable, "-m", "slimguard.cli.main", "diffusion", *args], capture_output=True,
                          text=True, env=env, timeout=600)


def test_cli_module_import_stays_light():
    code = "import sys, slimguard.cli.diffusion; print(int(any(m in sys.modules for m in ('torch', 'diffusers'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "0"


@pytest.mark.parametrize("args, message", [
    (["train", "--set", "model.norm_groups=5"], "norm_groups=5 must divide"),
    (["poison", "--set", "poison.rat=0.1"], "did you mean 'poison.rate'"),
    (["amplify", "--model", "/nonexistent/run"], "is not a diffusion model folder"),
])
def test_bad_input_is_one_line(args, message, tmp_path):
    p = _cli(*args, tmp_path=tmp_path)
    assert p.returncode == 2
    assert message in p.stderr and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


@pytest.mark.integration
@pytest.mark.parametrize("extra, message", [
    (["--target", "10"], "poison.target 10 is out of range"),
    (["--rate", "0.0001"], "poisons 0 of"),
])
def test_poison_bad_values_on_real_data(extra, message, tmp_path, need_asset):
    need_asset("fashion-mnist")
    p = _cli("poison", "--set", "data.n_train=1000", *extra, tmp_path=tmp_path)
    assert p.returncode == 2 and message in p.stderr


@pytest.mark.integration
def test_poison_writes_indices_and_preview(tmp_path, need_asset):
    need_asset("fashion-mnist")
    p = _cli("poison", "--rate", "0.1", "--target", "3", "--set", "data.n_train=1000", "--run", "p", tmp_path=tmp_path)
    assert p.returncode == 0, p.stderr
    run = tmp_path / "p"
    idx = json.loads((run / "poisoned_indices.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    assert len(idx) == 100 == metrics["n_poisoned_unique"]
    assert metrics["within_class_trigger_fraction"] == pytest.approx(0.5)
    assert json.loads((run / "config.json").read_text())["poison"]["target"] == 3
    assert (run / "poisoned_preview.png").stat().st_size > 1000


@pytest.mark.slow
@pytest.mark.integration
def test_train_then_measure_end_to_end(tmp_path, need_asset):
    """Minutes: a 30-step model through every command (numbers are smoke-scale)."""
    need_asset("fashion-mnist")
    sets = ["--set", "data.n_train=1000", "--set", "steps=30", "--set", "checkpoint_every=10"]
    assert _cli("train", *sets, "--run", "m", tmp_path=tmp_path).returncode == 0
    small = ["--set", "cnn.epochs=1"]
    for cmd, extra in [("sample", ["--set", "n_per_class=2", "--set", "ddim_steps=3"]),
                       ("amplify", ["--set", "n_samples=8", "--set", "ddim_steps=3", *small]),
                       ("detect", ["--set", "n_samples=16", "--set", "ddim_steps=3", *small]),
                       ("classify", ["--set", "n_test=10", "--set", "draws=1", *small])]:
        p = _cli(cmd, "--model", str(tmp_path / "m"), *extra, "--run", cmd, tmp_path=tmp_path)
        assert p.returncode == 0, (cmd, p.stderr[-2000:])
        assert (tmp_path / cmd / "metrics.json").is_file()


@pytest.mark.slow
@pytest.mark.integration
def test_demo_step_quick(tmp_path, need_asset, monkeypatch):
    need_asset("fashion-mnist")
    monkeypatch.setenv("SLIMGUARD_RUNS", str(tmp_path))  # no benchmark model there: trains a smoke-scale one
    from slimguard.guard.diffusion.demo import demo_step

    res = demo_step(quick=True, out_dir=tmp_path / "demo")
    assert {r["metric"] for r in res.summary} >= {"ASR", "CACC"}
    assert "<img" in res.html and (tmp_path / "demo" / "amplification.png").is_file()
