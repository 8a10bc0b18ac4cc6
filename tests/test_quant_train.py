"""EdgeQAT trainer on a tiny random Llama: losses combine, exact resume, config mismatch, DDP (2 CPU procs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from slimguard.core.errors import SlimguardError
from slimguard.core.runs import Run

HERE = Path(__file__).resolve().parent
WORKER = HERE / "quant_ddp_worker.py"
sys.path.insert(0, str(HERE))

from quant_ddp_worker import tiny_blocks, tiny_config, tiny_model  # noqa: E402


def _train(cfg, **kw):
    from slimguard.slim.quant.train import train

    return train(cfg, model=tiny_model(), blocks=tiny_blocks(), progress=False, **kw)


@pytest.mark.parametrize("loss", [dict(ce=True), dict(kd=True), dict(entropy=True, distribution=True, kd=True),
                                  dict(ce=True, entropy=True, entropy_cap="teacher")])  # the cap alone needs the teacher
def test_losses_train_and_lower_loss(loss):
    cfg = tiny_config(steps=6, loss=loss, qat=dict(w_bits=4, a_bits=8, kv_bits=4, token_adaptive=True))
    res, model = _train(cfg)
    assert len(res.losses) == 6 and all(map(lambda v: v == v, res.losses))
    assert res.eval is not None and res.eval.kl_to_fp is not None and res.eval.kl_to_fp >= 0
    assert res.eval_fp is not None and res.eval_fp.ppl > 1
    assert res.losses[-1] < res.losses[0]


def test_resume_continues_exactly(tmp_path):
    cfg = tiny_config(steps=6, checkpoint_every=2, loss=dict(kd=True, entropy=True))
    full, _ = _train(cfg, run=Run.create("full", root=tmp_path, config=cfg))
    r = Run.create("cut", root=tmp_path, config=cfg)
    _train(cfg, run=r, stop_at=3, do_eval=False)  # "killed" after step 3: last checkpoint is step 2
    resumed, _ = _train(cfg, run=r, resume=True)
    assert resumed.losses[:2] == full.losses[:2]
    assert resumed.final_loss == full.final_loss


def test_resume_rejects_other_config(tmp_path):
    cfg = tiny_config(steps=2, checkpoint_every=1)
    r = Run.create("a", root=tmp_path, config=cfg)
    _train(cfg, run=r, do_eval=False)
    other = tiny_config(steps=2, checkpoint_every=1, qat=dict(w_bits=8))
    with pytest.raises(SlimguardError, match="different config"):
        _train(other, run=r, resume=True)


def test_resume_rejects_a_checkpoint_with_another_optimizer_layout(tmp_path):
    # e.g. one written before quantizer steps had per-bit-width learning rates: same config, other param groups
    from slimguard.slim.quant.train import CKPT

    cfg = tiny_config(steps=2, checkpoint_every=1)
    r = Run.create("a", root=tmp_path, config=cfg)
    _train(cfg, run=r, do_eval=False)
    path = r.path / CKPT
    ck = torch.load(path, weights_only=True)
    groups = ck["optimizer"]["param_groups"]
    groups[-2]["params"] += groups.pop()["params"]  # two quantizer groups merged into one, as the old layout had
    torch.save(ck, path)
    with pytest.raises(SlimguardError, match="different optimizer layout"):
        _train(cfg, run=r, resume=True)


def test_checkpoint_is_the_shared_format_and_killed_writes_are_cleaned(tmp_path):
    from slimguard.core.checkpoint import load_checkpoint
    from slimguard.slim.quant.train import CKPT, CKPT_KIND, config_fingerprint

    cfg = tiny_config(steps=2, checkpoint_every=1)
    r = Run.create("a", root=tmp_path, config=cfg)
    stale = r.path / ".checkpoint.pt.k1ll3d_x"  # a SIGKILL during a write: up to ~1.3 GB for a real model
    stale.write_bytes(b"partial")
    _train(cfg, run=r, do_eval=False)
    assert not stale.exists()
    ck = load_checkpoint(r.path / CKPT, kind=CKPT_KIND, fingerprint=config_fingerprint(cfg))
    assert ck.step == 2 and len(ck.extra["losses"]) == 2 and set(ck.rng.generators) == {"init"}
    assert not any("embed_tokens" in k for k in ck.model)  # frozen embeddings are not saved
    (r.path / CKPT).write_bytes((r.path / CKPT).read_bytes()[:1000])
    with pytest.raises(SlimguardError, match="not a slimguard checkpoint or truncated"):
        _train(cfg, run=r, resume=True)


def test_resume_without_checkpoint(tmp_path):
    cfg = tiny_config(steps=2)
    with pytest.raises(SlimguardError, match="no checkpoint"):
        _train(cfg, run=Run.create("empty", root=tmp_path), resume=True)


def _free_port() -> int:
    """A port nobody listens on now: a fixed one collides with a concurrent test run on the same host."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_cpu_processes_match_single(tmp_path):
    single, dual = tmp_path / "single.json", tmp_path / "ddp.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE.parent)}
    p1 = subprocess.run([sys.executable, str(WORKER), str(single)], env=env, capture_output=True, text=True,
                        timeout=600)
    assert p1.returncode == 0, p1.stderr[-2000:]
    p2 = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}",
                         str(WORKER), str(dual)], env=env, capture_output=True, text=True, timeout=600)
    assert p2.returncode == 0, p2.stderr[-2000:]
    a, b = json.loads(single.read_text()), json.loads(dual.read_text())
    assert b["world"] == 2 and a["world"] == 1
    assert abs(a["final_loss"] - b["final_loss"]) < 2e-3 * abs(a["final_loss"])
    assert max(abs(x - y) for x, y in zip(a["losses"], b["losses"])) < 5e-3 * max(a["losses"])


def test_non_finite_gradient_skips_the_update_instead_of_poisoning_the_weights():
    # one inf gradient must not turn every weight NaN through AdamW (seen on CUDA, batch 8 x 128)
    from slimguard.slim.quant.train import train

    model = tiny_model()
    target = model.model.layers[0].mlp.up_proj.weight
    calls = {"n": 0}

    def poison_second_backward(grad):
        calls["n"] += 1
        return torch.full_like(grad, float("inf")) if calls["n"] == 2 else grad

    target.register_hook(poison_second_backward)
    cfg = tiny_config(steps=4, qat=dict(w_bits=4, a_bits=8))
    with pytest.warns(RuntimeWarning, match="1 of 4 updates skipped"):
        res, trained = train(cfg, model=model, blocks=tiny_blocks(), progress=False, do_eval=False)
    assert res.skipped_steps == 1 and [h.get("skipped", False) for h in res.history] == [False, True, False, False]
    assert all(torch.isfinite(p).all() for p in trained.parameters())


@pytest.mark.parametrize("kind", ["weight", "lsq_plus"])
def test_one_update_moves_a_step_by_the_same_fraction_at_4_and_8_bits(kind):
    """Adam moves a parameter by ~lr whatever its gradient scale; the per-bit-width rate keeps an 8-bit step
    (~18x smaller than a 4-bit one) from moving by more than its own size."""
    from slimguard.slim.quant.quantizers import ActQuant, WeightQuantizer
    from slimguard.slim.quant.prepare import quantizer_parameters
    from slimguard.slim.quant.train import _quantizer_groups

    g = torch.Generator().manual_seed(0)
    w = torch.randn(8, 64, generator=g) * 0.05
    x = torch.randn(4, 64, generator=g)
    moved = {}
    for bits in (4, 8):
        if kind == "weight":
            q = net = WeightQuantizer(w, bits, "group", 32, init="mse")
        else:  # a static activation point holds an LSQ+ quantizer
            net = ActQuant(bits)
            q = net.hi
            q.calibrate(x)
        before = q.step.detach().abs().mean().item()
        opt = torch.optim.AdamW(_quantizer_groups(net, quantizer_parameters(net), 1e-3), betas=(0.9, 0.95))
        target = w.clone() * 0.9 if kind == "weight" else x * 0.9
        loss = ((net(w if kind == "weight" else x) - target) ** 2).sum()
        loss.backward()
        opt.step()
        moved[bits] = (q.step.detach().abs().mean().item() - before) / before
    # the first Adam update has magnitude ~lr per element: relative change ~ lr_b / step_b, equal across bits
    assert abs(moved[8]) == pytest.approx(abs(moved[4]), rel=0.6)
    assert abs(moved[8]) < 0.5  # a single absolute rate moved the 8-bit step by well over its own size

