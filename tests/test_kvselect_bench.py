"""bench kvselect: the recorded command reproduces the run; partial runs can keep their own result file."""

from __future__ import annotations

import json

import pytest

from slimguard.core.errors import SlimguardError


@pytest.mark.parametrize("name, ok", [("kvselect", True), ("kvselect-gemma3", True), ("../evil", False),
                                      ("a b", False), ("", False)])
def test_result_name_is_a_plain_file_name(name, ok):
    from slimguard.bench.kvselect import KVSelectBenchConfig

    if ok:
        assert KVSelectBenchConfig(result=name).result == name
    else:
        with pytest.raises((SlimguardError, ValueError)):
            KVSelectBenchConfig(result=name)


def test_recorded_command_carries_sets_and_skips(tmp_path, monkeypatch):
    from slimguard.bench import harness
    from slimguard.bench.kvselect import run_bench

    results = tmp_path / "benchmarks" / "results"
    monkeypatch.setattr(harness, "RESULTS_DIR", results)
    monkeypatch.setattr(harness, "_refresh_readme", lambda head: None)
    path = run_bench(full=False, sets=["result=kvselect-part", "models=[gemma3-270m]"],
                     skip=["timing", "cache", "accuracy"])
    assert path == results / "kvselect-part.json"
    doc = json.loads(path.read_text())
    assert doc["command"] == ("slimguard bench kvselect --set result=kvselect-part --set 'models=[gemma3-270m]' "
                              "--skip timing,cache,accuracy")
    assert doc["targets"]["passkey_tokenselect_16k_gemma3-270m"]["value"] is None  # not run: null, never 0
    assert (tmp_path / "BENCHMARKS.md").read_text().count("## kvselect-part") == 1
