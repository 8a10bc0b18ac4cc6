"""The results record: one canonical file per capability, studies beside it with a purpose, short generated pages.

The first tests read the repository's own `benchmarks/results/`, BENCHMARKS.md, README.md and docs/; the
others write results into a temporary tree through `SLIMGUARD_BENCH_DIR` and the renderer.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from slimguard.bench import harness
from slimguard.core.errors import SlimguardError

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
REQUIRED = ("benchmark", "command", "git_commit", "rows", "targets")


def _studies() -> list[Path]:
    return sorted(p for cap in harness.CAPABILITIES for p in (RESULTS / cap).glob("*.json"))


def test_top_level_results_are_one_canonical_file_per_capability():
    stray = [p.name for p in RESULTS.glob("*.json") if p.stem not in harness.CAPABILITIES]
    assert not stray, f"move these under benchmarks/results/<capability>/ with a purpose: {stray}"
    folders = [p.name for p in RESULTS.iterdir() if p.is_dir() and p.name not in harness.CAPABILITIES]
    assert not folders, f"a results folder that names no capability: {folders}"


@pytest.mark.parametrize("path", [RESULTS / f"{c}.json" for c in harness.CAPABILITIES if (RESULTS / f"{c}.json").is_file()]
                         + _studies(), ids=lambda p: str(p.relative_to(RESULTS)))
def test_every_result_keeps_its_record_and_every_study_says_why(path):
    doc = json.loads(path.read_text())
    assert all(k in doc for k in REQUIRED), f"{path} lacks {[k for k in REQUIRED if k not in doc]}"
    study = path.parent != RESULTS
    cap = path.parent.name if study else path.stem
    assert doc["benchmark"] == cap
    if study:
        assert doc.get("study") == path.stem
        purpose = doc.get("purpose")
        assert isinstance(purpose, str) and purpose.strip() and "\n" not in purpose.strip(), f"{path}: one-line purpose"


def _headline_block() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = text.split("<!-- headline:start -->", 1)[1].split("<!-- headline:end -->", 1)[0]
    return [ln for ln in block.splitlines() if ln.startswith("| [")]


def test_benchmarks_md_is_short_and_the_headline_is_one_row_per_capability():
    assert (ROOT / "BENCHMARKS.md").stat().st_size < 40 * 1024
    rows = _headline_block()
    caps = [re.match(r"\| \[([a-z]+)\]", r).group(1) for r in rows]
    assert 0 < len(rows) <= len(harness.CAPABILITIES) and len(set(caps)) == len(caps)
    assert set(caps) <= set(harness.CAPABILITIES)


@pytest.mark.parametrize("cap", harness.CAPABILITIES)
def test_each_capability_has_a_short_user_guide(cap):
    guide = ROOT / "docs" / f"{cap}.md"
    assert guide.is_file(), f"docs/{cap}.md: the user guide of `{cap}`"
    assert guide.stat().st_size < 15 * 1024, f"docs/{cap}.md is over 15 KB: move lab notes to docs/notes/"
    assert "<!-- numbers:start -->" in guide.read_text()


def test_generated_pages_match_the_results(tmp_path):
    """BENCHMARKS.md, the README headline and the guides' numbers are what `bench render` makes of the results."""
    shutil.copytree(RESULTS, tmp_path / "benchmarks" / "results")
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    harness.render_benchmarks_md(tmp_path / "benchmarks" / "results")
    stale = [p for p in ["BENCHMARKS.md", "README.md", *(f"docs/{c}.md" for c in harness.CAPABILITIES)]
             if (tmp_path / p).read_text() != (ROOT / p).read_text()]
    assert not stale, f"out of date, run `slimguard bench render`: {stale}"


# --- the writer's path rule, in a temporary results folder ---

@pytest.mark.parametrize("cap, name, rel, study", [
    ("kvselect", None, "kvselect.json", None),
    ("kvselect", "kvselect", "kvselect.json", None),
    ("kvselect", "kvselect-gemma3", "kvselect/gemma3.json", "gemma3"),
    ("kvselect", "gemma3", "kvselect/gemma3.json", "gemma3"),
    ("quant", "quant_gpu", "quant/gpu.json", "gpu"),
    ("quant", "kvselect-x", "quant/kvselect-x.json", "kvselect-x"),
])
def test_result_name_equal_to_the_capability_is_canonical_any_other_a_study(tmp_path, monkeypatch, cap, name, rel,
                                                                              study):
    monkeypatch.setenv("SLIMGUARD_BENCH_DIR", str(tmp_path))
    cmd = f"slimguard bench {cap}" + (f" --set result={name}" if name else "")
    path = harness.write_result(cap, name=name, command=cmd, config={}, rows=[],
                                targets={"t": harness.target(1.0, ">= 0")})
    assert path == tmp_path / rel and path.is_file()
    doc = json.loads(path.read_text())
    assert doc["benchmark"] == cap and doc.get("study") == study
    assert doc["purpose"] == ("canonical" if study is None else f"study: {cmd}")
    assert harness.artefact_path(cap, name, "_plot.png") == path.with_name(path.stem + "_plot.png")
    assert (tmp_path / "BENCHMARKS.md").is_file()


def test_a_given_purpose_is_kept_and_must_be_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("SLIMGUARD_BENCH_DIR", str(tmp_path))
    kw = dict(command="c", config={}, rows=[], targets={})
    p = harness.write_result("quant", name="w8", purpose="W8A8 at 40 steps", **kw)
    assert json.loads(p.read_text())["purpose"] == "W8A8 at 40 steps"
    with pytest.raises(SlimguardError, match="one line"):
        harness.write_result("quant", name="w8", purpose="two\nlines", **kw)


@pytest.mark.parametrize("cap, name, message", [
    ("unit", None, "unknown benchmark capability 'unit'"),
    ("quant", "../evil", "not a plain file name"),
    ("quant", "Quant Long", "not a plain file name"),
])
def test_bad_result_names_are_one_line_errors(tmp_path, cap, name, message):
    with pytest.raises(SlimguardError, match=re.escape(message)):
        harness.result_path(cap, name, results_dir=tmp_path)


def test_render_lists_studies_one_line_each_and_refuses_a_stray_top_level_file(tmp_path):
    res = tmp_path / "benchmarks" / "results"
    kw = dict(config={}, targets={"t": harness.target(2.0, ">= 1")}, results_dir=res)
    harness.write_result("core", command="slimguard bench core", rows=[{"method": "a", "metric": "s", "value": 1.5}],
                         **kw)
    harness.write_result("core", name="core-slow", purpose="the slow machine", command="slimguard bench core --x",
                         rows=[{"method": "a", "metric": "s", "value": 987.25}], **kw)
    md = (tmp_path / "BENCHMARKS.md").read_text()
    assert "| a | 1.5 |" in md  # the canonical rows, as a table
    assert "- [slow](benchmarks/results/core/slow.json): the slow machine (1 of 1 targets met;" in md
    assert "987.2" not in md  # a study is listed, never rendered
    (res / "core-old.json").write_text("{}")
    with pytest.raises(SlimguardError, match="core-old.json is not a capability's canonical result"):
        harness.render_benchmarks_md(res)


def test_render_refreshes_the_readme_headline_and_the_guides_numbers(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "README.md").write_text("# x\n<!-- headline:start -->\nSTALE ROW\n<!-- headline:end -->\ntail\n")
    (tmp_path / "docs" / "core.md").write_text("# core\n<!-- numbers:start -->\n<!-- numbers:end -->\n")
    rows = [{"method": "load safetensors folder (slimguard)", "metric": "seconds", "value": 0.5},
            {"method": "load GGUF via transformers gguf_file", "metric": "seconds", "value": 20.0}]
    harness.write_result("core", command="slimguard bench core --repeats 3", config={}, rows=rows,
                         targets={"load_speedup_vs_gguf": harness.target(40.0, ">= 2")},
                         results_dir=tmp_path / "benchmarks" / "results")
    readme = (tmp_path / "README.md").read_text()
    assert "STALE ROW" not in readme and readme.endswith("<!-- headline:end -->\ntail\n")
    assert ("| [core](BENCHMARKS.md#core) | model load, seconds (SmolLM2-135M) | 0.5 (load safetensors folder "
            "(slimguard)) | 20 (load GGUF via transformers gguf_file) | `load_speedup_vs_gguf` 40 (>= 2) | yes |") in readme
    guide = (tmp_path / "docs" / "core.md").read_text()
    assert "`slimguard bench core --repeats 3`" in guide and "- `load_speedup_vs_gguf`: 40 (goal >= 2): met" in guide


@pytest.mark.parametrize("rows, lines", [
    # mean over the folded field (dataset); NaN left out; a cell measured nowhere is n/a; numeric columns in order
    ([{"m": "a", "L": 4096, "value": 1.0, "d": "x"}, {"m": "a", "L": 4096, "value": 3.0, "d": "y"},
      {"m": "a", "L": 1024, "value": float("nan")}, {"m": "b", "L": 1024, "value": 0.25}],
     ["| m | 1024 | 4096 |", "|---|---|---|", "| a | n/a | 2 |", "| b | 0.25 |  |"]),
    ([], []),
])
def test_pivot_folds_rows_into_one_readable_table(rows, lines):
    from slimguard.bench.render import TableSpec, pivot

    assert pivot(rows, TableSpec("", ("m",), column="L")) == lines
