"""`slimguard quant` bad input: one line on stderr, exit code 2, no traceback (no model is loaded)."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("args, message", [
    (["quant", "train", "--set", "qat.w_bits=5"], "w_bits must be one of (2, 3, 4, 8)"),
    (["quant", "train", "--kv-bits", "1"], "kv_bits must be one of"),
    (["quant", "train", "--set", "qat.gruop_size=16"], "did you mean 'qat.group_size'"),
    (["quant", "train", "--set", "qat.token_adaptive=true", "--set", "qat.a_bits=null"], "token_adaptive needs a_bits"),
    (["quant", "train", "--run", "no-such-run-xyz", "--resume"], "does not exist yet"),
    (["quant", "export", "/nonexistent/run"], "does not exist"),
    (["quant", "eval", "/nonexistent/run"], "does not exist"),
])
def test_quant_bad_input_one_line(args, message, tmp_path):
    import os

    env = {**os.environ, "SLIMGUARD_RUNS": str(tmp_path)}
    p = subprocess.run([sys.executable, "-m", "slimguard.cli.main", *args], capture_output=True, text=True,
                       timeout=600, env=env)
    assert p.returncode == 2, p.stderr
    assert message in p.stderr
    assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1
