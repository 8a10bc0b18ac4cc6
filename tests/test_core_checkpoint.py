"""The shared checkpoint (core.checkpoint) on a tiny model: exact round trip of model, optimizer, scheduler,
step and every RNG; one-line refusals for truncated, foreign, other-version, other-trainer and other-config
files; atomic writes and removal of the temp files a killed write leaves."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from slimguard.core.checkpoint import (FORMAT, VERSION, Fingerprint, RngState, clean_stale_temps, data_digest,
                                       differing_fields, load_checkpoint, save_checkpoint)
from slimguard.core.errors import SlimguardError

CFG = {"lr": 1e-3, "steps": 10, "qat": {"w_bits": 4, "a_bits": 8}, "checkpoint_every": 2}


def _fp(**change):
    return Fingerprint.of({**CFG, **change}, exclude=("checkpoint_every",))


def _trainer(opt_kind: str, sched_kind: str, seed: int = 0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.3), torch.nn.Linear(8, 2))
    opt = {"adamw": lambda p: torch.optim.AdamW(p, lr=1e-2),
           "sgd": lambda p: torch.optim.SGD(p, lr=1e-2, momentum=0.9)}[opt_kind](model.parameters())
    sched = {"lambda": lambda o: torch.optim.lr_scheduler.LambdaLR(o, lambda s: 1 / (1 + s)),
             "step": lambda o: torch.optim.lr_scheduler.StepLR(o, 2, 0.5)}[sched_kind](opt)
    return model, opt, sched


def _steps(model, opt, sched, gen, rng, n):
    """Training steps that draw from every stream a trainer may use; returns the losses."""
    out = []
    for _ in range(n):
        x = torch.randn(3, 4, generator=gen) + float(rng.normal()) + random.random()
        loss = model(x).pow(2).mean()  # dropout draws from the global torch RNG
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        out.append(loss.item())
    return out


@pytest.mark.parametrize("opt_kind, sched_kind, at", [("adamw", "lambda", 2), ("sgd", "step", 3), ("adamw", "step", 1)])
def test_round_trip_resumes_exactly(tmp_path, opt_kind, sched_kind, at):
    random.seed(7)
    gen, rng = torch.Generator().manual_seed(1), np.random.default_rng(2)
    model, opt, sched = _trainer(opt_kind, sched_kind)
    first = _steps(model, opt, sched, gen, rng, at)
    path = save_checkpoint(tmp_path / "checkpoint.pt", kind="toy", step=at, fingerprint=_fp(), model=model,
                           optimizer=opt, scheduler=sched, generators={"data": gen}, numpy_generators={"np": rng},
                           python_random=True, extra={"losses": first})
    rest = _steps(model, opt, sched, gen, rng, 3)
    # a fresh process: other initial weights and streams, then restored
    random.seed(99)
    gen2, rng2 = torch.Generator().manual_seed(5), np.random.default_rng(6)
    model2, opt2, sched2 = _trainer(opt_kind, sched_kind, seed=3)
    ck = load_checkpoint(path, kind="toy", fingerprint=_fp(checkpoint_every=50))  # cadence is not in the fingerprint
    ck.restore(model=model2, optimizer=opt2, scheduler=sched2, generators={"data": gen2}, numpy_generators={"np": rng2},
               python_random=True)
    assert ck.step == at and ck.extra["losses"] == first
    assert _steps(model2, opt2, sched2, gen2, rng2, 3) == rest
    for a, b in zip(model.parameters(), model2.parameters()):
        assert torch.equal(a, b)


def test_file_loads_with_weights_only_and_says_what_it_is(tmp_path):
    model, opt, sched = _trainer("adamw", "lambda")
    path = save_checkpoint(tmp_path / "c.pt", kind="toy", step=1, fingerprint=_fp(), model=model.state_dict(),
                           optimizer=opt, scheduler=sched, numpy_generators={"np": np.random.default_rng(0)},
                           python_random=True)
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == FORMAT and raw["version"] == VERSION and raw["kind"] == "toy"
    assert raw["fingerprint"] == _fp().digest and len(raw["fingerprint"]) == 64
    assert set(raw["model"]) == set(model.state_dict()) and "optimizer" in raw and "scheduler" in raw


def _good(tmp_path, name="checkpoint.pt"):
    model, opt, sched = _trainer("adamw", "lambda")
    return save_checkpoint(tmp_path / name, kind="toy", step=1, fingerprint=_fp(), model=model, optimizer=opt,
                           scheduler=sched)


def _rewrite(**change):
    def f(p):
        raw = torch.load(p, weights_only=True)
        raw.update(change)
        torch.save(raw, p)
    return f


class _Foreign:
    pass


@pytest.mark.parametrize("damage, message", [
    (lambda p: p.write_bytes(p.read_bytes()[:-200]), "not a slimguard checkpoint or truncated"),
    (lambda p: p.write_bytes(p.read_bytes()[:100]), "not a slimguard checkpoint or truncated"),
    (lambda p: p.write_bytes(b""), "not a slimguard checkpoint or truncated"),
    (lambda p: p.write_bytes(b"\x80\x04garbage" * 10), "not a slimguard checkpoint or truncated"),
    (lambda p: torch.save(_Foreign(), p), "not a slimguard checkpoint or truncated"),  # weights_only refuses code
    (lambda p: torch.save({"optim": {}, "sched": {}, "step": 3}, p), "no format marker"),  # an old trainer's file
    (lambda p: torch.save([1, 2], p), "no format marker"),
    (_rewrite(version=VERSION + 1), f"format version {VERSION + 1}"),
    (_rewrite(kind="diffusion-train"), "written by the diffusion-train trainer, not toy"),
    (lambda p: _drop(p, "optimizer"), "lacks optimizer"),
])
def test_unusable_checkpoint_is_a_one_line_error_naming_the_file(tmp_path, damage, message):
    path = _good(tmp_path)
    damage(path)
    with pytest.raises(SlimguardError, match=message) as e:
        load_checkpoint(path, kind="toy", fingerprint=_fp())
    assert "\n" not in str(e.value) and str(path) in str(e.value)


def _drop(p, key):
    raw = torch.load(p, weights_only=True)
    del raw[key]
    torch.save(raw, p)


@pytest.mark.parametrize("change, fields", [
    ({"lr": 2e-3}, "lr"),
    ({"qat": {"w_bits": 8, "a_bits": 8}}, "qat.w_bits"),
    ({"qat": {"w_bits": 8, "a_bits": 4}, "steps": 3}, "qat.a_bits, qat.w_bits, steps"),
    ({"seed": 1}, "seed"),  # a key only one side has
])
def test_other_config_is_refused_naming_the_fields(tmp_path, change, fields):
    path = _good(tmp_path)
    with pytest.raises(SlimguardError, match=r"was written by a run with a different config \(fields: "
                                             + fields.replace(".", r"\.") + r"\); start without --resume"):
        load_checkpoint(path, kind="toy", fingerprint=_fp(**change))


def test_missing_checkpoint(tmp_path):
    assert load_checkpoint(tmp_path / "none.pt", kind="toy", fingerprint=_fp(), missing_ok=True) is None
    with pytest.raises(SlimguardError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "none.pt", kind="toy", fingerprint=_fp())


@pytest.mark.parametrize("what, message", [("model", "does not match the model"),
                                           ("optimizer", "different optimizer layout"),
                                           ("generator", "random state")])
def test_restore_into_a_different_trainer_is_refused(tmp_path, what, message):
    model, opt, sched = _trainer("adamw", "lambda")
    path = save_checkpoint(tmp_path / "c.pt", kind="toy", step=1, fingerprint=_fp(), model=model, optimizer=opt,
                           scheduler=sched)
    ck = load_checkpoint(path, kind="toy", fingerprint=_fp())
    other = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.3), torch.nn.Linear(8, 3))
    with pytest.raises(SlimguardError, match=message):
        if what == "model":
            ck.restore(model=other)
        elif what == "optimizer":
            ck.restore(optimizer=torch.optim.AdamW([{"params": [other[0].weight]}, {"params": [other[2].weight]}]))
        else:
            ck.restore(generators={"data": torch.Generator()})


def test_restore_allows_the_keys_a_trainer_does_not_save(tmp_path):
    model, opt, sched = _trainer("adamw", "lambda")
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("0.")}  # a frozen first layer
    path = save_checkpoint(tmp_path / "c.pt", kind="toy", step=1, fingerprint=_fp(), model=state, optimizer=opt,
                           scheduler=sched)
    ck = load_checkpoint(path, kind="toy", fingerprint=_fp())
    with pytest.raises(SlimguardError, match="missing: 0.weight, 0.bias"):
        ck.restore(model=_trainer("adamw", "lambda")[0])
    ck.restore(model=_trainer("adamw", "lambda")[0], allow_missing=lambda k: k.startswith("0."))


def test_save_removes_stale_temps_of_that_checkpoint_only(tmp_path):
    stale = [tmp_path / ".checkpoint.pt.ab12cd_9", tmp_path / ".checkpoint.pt.zzzzzzzz"]
    keep = [tmp_path / ".other.pt.ab12cd_9", tmp_path / ".metrics.json.ab12cd_9", tmp_path / ".checkpoint.pt.notes",
            tmp_path / "checkpoint.pt.bak"]
    for p in stale + keep:
        p.write_bytes(b"x" * 64)
    _good(tmp_path)
    assert not any(p.exists() for p in stale) and all(p.exists() for p in keep)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".checkpoint.pt.")) == [".checkpoint.pt.notes"]


def test_clean_stale_temps_of_any_checkpoint_in_a_folder(tmp_path):
    stale = [tmp_path / ".checkpoint.pt.ab12cd_9", tmp_path / ".last.pt.0000aaaa"]
    keep = [tmp_path / ".metrics.json.ab12cd_9", tmp_path / "last.pt", tmp_path / ".last.pt.short"]
    for p in stale + keep:
        p.write_bytes(b"x")
    assert sorted(clean_stale_temps(tmp_path)) == sorted(stale)
    assert all(p.exists() for p in keep)
    assert clean_stale_temps(tmp_path / "absent") == []


def test_a_failed_write_keeps_the_previous_checkpoint_and_leaves_no_temp(tmp_path):
    path = _good(tmp_path)
    before = path.read_bytes()
    model, opt, sched = _trainer("sgd", "step")
    with pytest.raises(Exception):
        save_checkpoint(path, kind="toy", step=2, fingerprint=_fp(), model=model, optimizer=opt, scheduler=sched,
                        extra={"unpicklable": lambda: 0})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
    assert load_checkpoint(path, kind="toy", fingerprint=_fp()).step == 1


@pytest.mark.parametrize("a, b, exp", [
    ({"x": 1}, {"x": 1}, []),
    ({"x": 1, "y": {"z": [1, 2]}}, {"x": 1, "y": {"z": [1, 3]}}, ["y.z"]),
    ({"x": 1}, {"x": 1, "w": None}, ["w"]),
])
def test_differing_fields(a, b, exp):
    assert differing_fields(a, b) == exp


def test_fingerprint_is_canonical_and_data_digest_sees_content():
    assert Fingerprint.of({"b": 1, "a": (1, 2)}).digest == Fingerprint.of({"a": [1, 2], "b": 1}).digest
    assert Fingerprint.of({"a": 1}, seed=2).config == {"a": 1, "seed": 2}
    x = np.zeros((2, 3), np.float32)
    assert data_digest(x) == data_digest(x.copy()) != data_digest(x.reshape(3, 2)) != data_digest(x + 1)
    assert data_digest(["a", "b"], [0, 1]) != data_digest(["a", "b"], [1, 0])


def test_rng_state_restores_without_cuda_state():
    s = RngState.capture()
    assert s.torch_cuda is None or torch.cuda.is_initialized()
    a = torch.rand(3)
    s.restore()
    assert torch.equal(torch.rand(3), a)
