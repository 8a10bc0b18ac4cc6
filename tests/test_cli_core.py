"""CLI shell: help lists groups, bad input is one line with a non-zero exit, report renders."""

import json
import subprocess
import sys

import pytest

from slimguard.core.runs import Run


def _cli(*args, env=None):
    import os

    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "slimguard.cli.main", *args], capture_output=True, text=True,
                          env=e, timeout=600)


def test_help_lists_groups():
    out = _cli("--help").stdout
    for g in ("assets", "bench", "generate", "report", "demo"):
        assert g in out


@pytest.mark.parametrize("args, message", [
    (["assets", "fetch", "smollm3"], "unknown asset 'smollm3'"),
    (["generate", "--model", "nonexistent-model", "hi"], "unknown asset 'nonexistent-model'"),
    (["report", "/nonexistent/run"], "does not exist"),
])
def test_bad_input_is_one_line_no_traceback(args, message):
    p = _cli(*args)
    assert p.returncode == 2
    assert message in p.stderr
    assert "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


def test_report_renders_run(tmp_path):
    run = Run.create("r1", root=tmp_path, command="test", config={"a": 1})
    run.save_metrics({"acc": 0.5, "nested": {"x": 2}})
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    fig.savefig(run.path / "curve.png")
    p = _cli("report", str(run.path))
    assert p.returncode == 0, p.stderr
    html = (run.path / "report.html").read_text()
    assert "nested.x" in html and "data:image/png;base64," in html and "http" not in html.replace("http-equiv", "")


@pytest.mark.integration
def test_generate_paris(need_asset):
    need_asset("smollm2-135m")
    p = _cli("generate", "--model", "smollm2-135m", "--max-new-tokens", "5", "The capital of France is")
    assert p.returncode == 0, p.stderr
    assert "Paris" in p.stdout


def test_bench_harness_shape_and_markdown(tmp_path):
    from slimguard.bench.harness import mean_std, target, time_it, write_result

    t = time_it(lambda: sum(range(1000)), repeats=5, threads=1)
    assert len(t.times_s) == 5 and t.threads == 1 and t.median_s > 0
    ms = mean_std([0.8, 0.9, 1.0])
    assert ms["n"] == 3 and abs(ms["value"] - 0.9) < 1e-9 and abs(ms["std"] - 0.1) < 1e-9
    assert target(0.5, ">= 0.9")["met"] is False and target(0.1, "<= 0.2")["met"] is True
    path = write_result("unit", command="slimguard bench unit", config={"x": 1},
                        rows=[{"method": "a", "value": 1.0}], targets={"t": target(2.0, ">= 1")}, results_dir=tmp_path)
    doc = json.loads(path.read_text())
    assert {"command", "git_commit", "rows", "targets", "machine", "timestamp"} <= set(doc)
    md = (tmp_path / "BENCHMARKS.md").read_text()
    assert "slimguard bench unit" in md and "| t | 2 | >= 1 | yes |" in md


def test_headline_lists_measured_targets_first():
    from slimguard.bench.harness import headline_table, target

    tg = {"a": target(None, ">= 1"), "b": target(0.5, ">= 1"), "c": target(None, ">= 1"), "d": target(2.0, ">= 1")}
    row = headline_table([{"benchmark": "x", "targets": tg, "git_commit": "abc"}])[2]
    assert row == "| [x](BENCHMARKS.md#x) | 1 of 2 | b 0.5 / >= 1 (no); d 2 / >= 1 | `abc` |"
    empty = headline_table([{"benchmark": "y", "targets": {"a": target(None, ">= 1")}, "git_commit": "abc"}])[2]
    assert "| 0 of 0 | none measured |" in empty
