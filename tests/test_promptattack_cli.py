"""PromptAttack CLI: bad input is one line with exit code 2; the group imports light."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _cli(*args, group="promptattack"):
    return subprocess.run([sys.executable, "-m", "slimguard.cli.main", *group.split(), *args], capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("args, message", [
    (["run", "--strategy", "hotflip"], "unknown strategy 'hotflip'"),
    (["run", "--set", "template={x} It was"], "has no {answer} slot"),
    (["run", "--set", "verbalizer=good"], "at least two classes"),
    (["run", "--set", "objective=hinge"], "objective"),
    (["promptattack", "--max-queries", "0"], "config key 'attack.max_queries': Input should be greater than or equal to 1"),
    (["promptattack", "--strategy", "gradeint"], "unknown strategy 'gradeint'"),
])
def test_bad_input_is_one_line(args, message):
    p = _cli(*args[1:], group="bench promptattack") if args[0] == "promptattack" else _cli(*args)
    assert p.returncode == 2, p.stderr
    assert message in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr


def test_group_import_is_light():
    code = "import sys, slimguard.cli.promptattack; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).stdout
    assert out.strip() == "False False"


@pytest.mark.integration
@pytest.mark.slow
def test_run_on_real_assets(tmp_path, need_asset):
    """Real SmolLM2 + Rotten Tomatoes, tiny budget: run dir, metrics and the side-by-side report."""
    import json
    import os

    need_asset("smollm2-135m", "rotten-tomatoes")
    env = dict(os.environ, SLIMGUARD_RUNS=str(tmp_path))
    p = subprocess.run([sys.executable, "-m", "slimguard.cli.main", "promptattack", "run", "--victim", "smollm2-135m",
                        "--dataset", "rotten-tomatoes", "--strategy", "distractor", "--setting", "zeroshot",
                        "--n-test", "16", "--set", "n_attack=4", "--set", "max_queries=4", "--run", "t",
                        "--threads", "1"], capture_output=True, text=True, timeout=1200, env=env)
    assert p.returncode == 0, p.stderr[-2000:]
    m = json.loads((tmp_path / "t" / "metrics.json").read_text())
    assert m["n_test"] == 16 and m["edits"] <= 3 and 0 <= m["attacked_acc"] <= 1
    assert "malicious template" in (tmp_path / "t" / "report.html").read_text()


@pytest.mark.parametrize("content, message", [("", "needs 'text' and 'label' columns"),
                                              ("text,label\nonly one,pos\n", "only one class")])
def test_empty_or_degenerate_dataset_is_one_line(tmp_path, content, message):
    f = tmp_path / "data.csv"
    f.write_text(content)
    p = _cli("run", "--dataset", str(f), "--threads", "1")
    assert p.returncode == 2, p.stderr[-500:]
    assert message in p.stderr and len(p.stderr.strip().splitlines()) == 1
