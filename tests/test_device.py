"""Device selection shared by the trainers (diffusion, QAT bench): one rule, clear errors."""

import pytest
import torch

from slimguard.core.errors import SlimguardError
from slimguard.core.models import resolve_device


@pytest.mark.parametrize("arg, env, want", [
    ("cpu", None, "cpu"),
    (None, "cpu", "cpu"),
    ("auto", None, "cuda" if torch.cuda.is_available() else "cpu"),
    (None, None, "cuda" if torch.cuda.is_available() else "cpu"),
    (" CPU ", None, "cpu"),
])
def test_resolve_device(monkeypatch, arg, env, want):
    if env is None:
        monkeypatch.delenv("SLIMGUARD_DEVICE", raising=False)
    else:
        monkeypatch.setenv("SLIMGUARD_DEVICE", env)
    assert resolve_device(arg) == want


@pytest.mark.parametrize("arg, match", [("tpu", "auto, cpu or cuda"), ("gpu0", "auto, cpu or cuda")]
                         + ([] if torch.cuda.is_available() else [("cuda", "no CUDA GPU"), ("cuda:1", "no CUDA GPU")]))
def test_bad_device_is_one_line(monkeypatch, arg, match):
    monkeypatch.delenv("SLIMGUARD_DEVICE", raising=False)
    with pytest.raises(SlimguardError, match=match) as e:
        resolve_device(arg)
    assert "\n" not in str(e.value)
