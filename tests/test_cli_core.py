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
    path = write_result("core", command="slimguard bench core --repeats 1", config={"x": 1},
                        rows=[{"method": "a", "value": 1.0}], targets={"t": target(2.0, ">= 1")}, results_dir=tmp_path)
    assert path == tmp_path / "core.json"
    doc = json.loads(path.read_text())
    assert {"command", "git_commit", "rows", "targets", "machine", "timestamp", "purpose"} <= set(doc)
    md = (tmp_path / "BENCHMARKS.md").read_text()
    assert "slimguard bench core --repeats 1" in md and "- `t`: 2 (goal >= 1): met" in md


def _head_doc(rows, value, goal=">= 0.90"):
    from slimguard.bench.harness import target

    return {"benchmark": "compress", "git_commit": "abc", "rows": rows, "targets": {"retention_ood_at_3x": target(value, goal)}}


def _ret(method, value, domain="bbc-news", rate=0.33, split="out-of-domain"):
    return {"method": method, "split": split, "domain": domain, "rate": rate, "metric": "answer_retention",
            "value": value}


@pytest.mark.parametrize("rows, value, row", [
    # ours averaged over held-out domains; the strongest peer is the best one of this run; other rates and
    # in-domain rows do not count
    ([_ret("slimguard", 0.9), _ret("slimguard", 1.0, "grimm-tales"), _ret("random", 0.3),
      _ret("selective-context", 0.8), _ret("selective-context", 0.9, "grimm-tales"),
      _ret("selective-context", 1.0, rate=0.5), _ret("llmlingua-package", 1.0, "pg-essays", split="in-domain")], 0.95,
     "| [compress](BENCHMARKS.md#compress) | out-of-domain answer retention at 3x compression (mean over held-out "
     "domains) | 0.95 (slimguard) | 0.85 (selective-context) | `retention_ood_at_3x` 0.95 (>= 0.90) | yes |"),
    # nothing measured: n/a, never 0, and no peer invented
    ([], None, "| [compress](BENCHMARKS.md#compress) | out-of-domain answer retention at 3x compression (mean over "
               "held-out domains) | n/a (slimguard) | none measured | `retention_ood_at_3x` n/a (>= 0.90) | n/a |"),
])
def test_headline_is_one_row_with_key_number_strongest_peer_and_goal(rows, value, row):
    from slimguard.bench.render import headline_table

    table = headline_table({"compress": _head_doc(rows, value)})
    assert table[2:] == [row]


def test_headline_picks_the_lowest_peer_when_lower_is_better_and_keeps_a_recorded_entry():
    from slimguard.bench.harness import target
    from slimguard.bench.render import headline_table

    rows = [{"method": m, "bits": b, "metric": "ppl", "value": v} for m, b, v in
            [("edgeqat", "W4A8KV4", 47.0), ("lsq_ce", "W4A8KV4", 49.0), ("rtn_per_group", "W4A8KV4", 70.0),
             ("lsq_ce", "W8A8", 40.0)]]
    doc = {"rows": rows, "targets": {"edgeqat_w4a8kv4_ppl_ratio_to_fp": target(0.98, "<= 1.10")}}
    assert "| 47 (edgeqat) | 49 (lsq_ce) |" in headline_table({"quant": doc})[2]
    recorded = {**doc, "headline": {"target": "t", "value": 1.0, "goal": ">= 2", "met": False, "label": "x",
                                    "method": {"name": "m", "value": 3.0}, "peer": {"name": "p", "value": 4.0}}}
    assert headline_table({"quant": recorded})[2] == "| [quant](BENCHMARKS.md#quant) | x | 3 (m) | 4 (p) | `t` 1 (>= 2) | no |"
