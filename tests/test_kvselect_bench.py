"""bench kvselect: the recorded command reproduces the run; partial runs keep their own study file."""

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
    path = run_bench(full=False, sets=["result=kvselect-part", "models=[gemma3-270m]"],
                     skip=["timing", "cache", "accuracy"])
    assert path == results / "kvselect" / "part.json"  # a study: its own file beside the canonical one
    doc = json.loads(path.read_text())
    assert doc["command"] == ("slimguard bench kvselect --set result=kvselect-part --set 'models=[gemma3-270m]' "
                              "--skip timing,cache,accuracy")
    assert doc["targets"]["passkey_tokenselect_16k_gemma3-270m"]["value"] is None  # not run: null, never 0
    assert (tmp_path / "BENCHMARKS.md").read_text().count("(benchmarks/results/kvselect/part.json)") == 1


def test_a_selector_revision_keeps_its_old_cached_cases_from_being_reused(monkeypatch):
    from slimguard.bench import kvselect

    args = ("gemma3-270m", "passkey", 4096, "quest", {"k": 512}, "cpu", "abc")
    before = kvselect._case_key(*args)
    monkeypatch.setitem(kvselect.SELECTOR_REVISION, "quest", kvselect.SELECTOR_REVISION["quest"] + 1)
    assert kvselect._case_key(*args) != before
    # a method at revision 1 keeps the key it had before revisions existed
    plain = ("gemma3-270m", "passkey", 4096, "streaming", {"k": 512}, "cpu", "abc")
    assert kvselect._case_key(*plain) == json.dumps(list(plain))


def test_full_sizes_are_a_base_that_set_still_overrides(tmp_path, monkeypatch):
    """`--full --set 'models=[smollm2-135m]'` must run one model: the --full sizes may not override the user."""
    import torch

    from slimguard.bench import harness
    from slimguard.bench.kvselect import run_bench

    monkeypatch.setattr(harness, "RESULTS_DIR", tmp_path)
    path = run_bench(full=True, sets=["result=kvselect-fullpart", "models=[smollm2-135m]", "n_per_depth=2"],
                     skip=["timing", "cache", "accuracy"])
    cfg = json.loads(path.read_text())["config"]
    assert cfg["models"] == ["smollm2-135m"] and cfg["n_per_depth"] == 2
    assert cfg["timing_lengths"] == [32768, 65536, 131072]
    assert (cfg["model_chunk_size"], cfg["selection"]["chunk_size"]) == (512, 128)  # accuracy vs Selection Cache part
    assert cfg["device"] == ("cuda" if torch.cuda.is_available() else "cpu")  # --full's auto, resolved


@pytest.fixture
def fake_accuracy(tmp_path, monkeypatch, tiny_llama):
    """accuracy_part on a tiny random Llama with seeded random 'haystacks'; returns the list of generate calls."""
    from types import SimpleNamespace

    import torch

    from slimguard.bench.kvselect import KVSelectBenchConfig, accuracy_part
    from slimguard.core import models
    from slimguard.core.models import LoadedModel
    from slimguard.slim.kvselect import tasks

    tok = SimpleNamespace(pad_token_id=0, decode=lambda ids: " ".join(map(str, ids.tolist())))
    monkeypatch.setattr(models, "load_causal_lm", lambda name, device="cpu": LoadedModel(tiny_llama, tok, name))
    monkeypatch.setattr(tasks, "Haystack", lambda tokenizer: None)

    def make_samples(hay, task, lengths, depths, n, seed):  # seeded per depth, like the real generator
        out = []
        for d in depths:
            gen = torch.Generator().manual_seed(seed + int(100 * d))
            out += [SimpleNamespace(input_ids=torch.randint(4, 128, (lengths[0],), generator=gen).tolist(),
                                    needle_span=(10, 20), n_tokens=lengths[0]) for _ in range(n)]
        return out

    monkeypatch.setattr(tasks, "make_samples", make_samples)
    # "correct" when the first generated token is even: deterministic, and differs between cases
    monkeypatch.setattr(tasks, "is_correct", lambda s, text: int(text.split()[0]) % 2 == 0)
    calls = []
    real = tiny_llama.generate
    monkeypatch.setattr(tiny_llama, "generate", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SLIMGUARD_RUNS", raising=False)  # cases land in tmp_path/runs
    return calls


def test_accuracy_cases_resume_without_recomputing(tmp_path, fake_accuracy):
    """A killed accuracy run restarts from its finished cases: same rows, no generate call repeated."""
    from slimguard.bench.kvselect import KVSelectBenchConfig, accuracy_part

    calls = fake_accuracy
    bc = KVSelectBenchConfig(lengths=[96], depths=[0.2, 0.8], n_per_depth=2, peers=[], peer_length=256, n_init=4, k=16,
                             n_local=16, chunk_size=16, tasks=["passkey"], result="kv-test", model_defaults=False)
    rows1, rows2 = [], []
    acc1 = accuracy_part(bc, rows1, {}, tmp_path)
    first = len(calls)
    assert first == 2 * 4  # dense + tokenselect, 4 cases each
    acc2 = accuracy_part(bc, rows2, {}, tmp_path)
    # only the recorded case (the selection plot's) is generated again
    assert len(calls) - first == 1
    assert acc1 == acc2 and [r["value"] for r in rows1] == [r["value"] for r in rows2]
    assert (tmp_path / "runs" / "bench-kv-test" / "cases.json").exists()
    # a named result keeps its own selection plot instead of replacing the default run's
    plots = sorted(p.name for p in tmp_path.glob("*_selection_*.png"))
    assert plots and all(p.startswith("kv-test_selection_") for p in plots)


@pytest.mark.parametrize("dense_max, expected", [(0, {(64, "dense"), (96, "dense"), (64, "tokenselect"), (96, "tokenselect")}),
                                                 (64, {(64, "dense"), (64, "tokenselect"), (96, "tokenselect")})])
def test_dense_only_up_to_dense_max(tmp_path, fake_accuracy, dense_max, expected):
    from slimguard.bench.kvselect import KVSelectBenchConfig, accuracy_part

    bc = KVSelectBenchConfig(lengths=[64, 96], depths=[0.5], n_per_depth=1, peers=[], n_init=4, k=16, n_local=16,
                             chunk_size=16, tasks=["passkey"], result="kv-dense", dense_max=dense_max,
                             model_defaults=False)
    rows = []
    accuracy_part(bc, rows, {}, tmp_path)
    assert {(r["context"], r["method"]) for r in rows} == expected


@pytest.mark.parametrize("ran, extra, has, lacks", [
    (["accuracy"], {"model_defaults": False}, ["k=2048", "dense only up to 8192"], ["Attention timings", "scaled defaults"]),
    (["accuracy"], {"model_defaults": True}, ["scaled defaults"], ["k=2048"]),
    (["timing", "cache"], {}, ["Attention timings"], ["Accuracy:"]),
])
def test_note_describes_only_the_parts_that_ran(ran, extra, has, lacks):
    from slimguard.bench.kvselect import KVSelectBenchConfig, kvselect_note

    note = kvselect_note(KVSelectBenchConfig(k=2048, dense_max=8192, **extra), 1.0, ran)
    assert all(h in note for h in has) and not any(x in note for x in lacks)


@pytest.mark.parametrize("model_defaults, budget", [(False, 4 + 16 + 16), (True, 64 + 1024 + 512)])
def test_model_defaults_take_each_models_scaled_budget(tmp_path, fake_accuracy, model_defaults, budget):
    from slimguard.bench.kvselect import KVSelectBenchConfig, accuracy_part

    bc = KVSelectBenchConfig(lengths=[64], depths=[0.5], n_per_depth=1, peers=[], n_init=4, k=16, n_local=16,
                             chunk_size=16, tasks=["passkey"], result="kv-md", model_defaults=model_defaults)
    rows = []
    accuracy_part(bc, rows, {}, tmp_path)
    assert {r["budget"] for r in rows} == {budget}


def test_cached_cases_follow_content_not_position(tmp_path, fake_accuracy, monkeypatch):
    """Re-running with other depths reorders the cases: cached results must still match a fresh run."""
    from slimguard.bench.kvselect import KVSelectBenchConfig, accuracy_part

    kw = dict(lengths=[96], n_per_depth=2, peers=[], n_init=4, k=16, n_local=16, chunk_size=16, tasks=["passkey"],
              methods=["dense"])
    accuracy_part(KVSelectBenchConfig(depths=[0.2, 0.8, 0.5], result="kv-a", **kw), [], {}, tmp_path)
    cached, fresh = [], []
    accuracy_part(KVSelectBenchConfig(depths=[0.5, 0.8], result="kv-a", **kw), cached, {}, tmp_path)
    n_before = len(fake_accuracy)
    accuracy_part(KVSelectBenchConfig(depths=[0.5, 0.8], result="kv-b", **kw), fresh, {}, tmp_path)
    assert len(fake_accuracy) - n_before == 4  # the fresh run really generated
    assert [r["value"] for r in cached] == [r["value"] for r in fresh]


def test_cached_case_keys_ignore_scoring_fields_for_other_methods():
    """Changing how TokenSelect scores must not invalidate dense or peer cases (they take minutes each)."""
    from slimguard.bench.kvselect import _case_budget

    base = {"n_init": 64, "k": 512, "n_local": 512, "chunk_size": 512, "pool_kernel": 31, "score_layers": [5]}
    assert _case_budget(base, "tokenselect") == base
    assert _case_budget(base, "dense") == {} == _case_budget({**base, "k": 2048}, "dense")
    assert _case_budget(base, "streaming") == {"n_init": 64, "k": 512, "n_local": 512, "chunk_size": 512}
    assert _case_budget(base, "quest") == _case_budget({**base, "pool_kernel": 1}, "quest")
    # the Quest form keys Quest's cases only
    assert _case_budget({**base, "quest_per_head": True}, "quest")["quest_per_head"] is True
    for m in ("tokenselect", "streaming", "h2o"):
        assert _case_budget({**base, "quest_per_head": True}, m) == _case_budget(base, m)


@pytest.mark.parametrize("positions", ["compact", "original", "auto"])
def test_positions_key_cached_cases_only_when_not_the_default(positions):
    """Cases cached before ``positions`` existed were compact: their keys must stay valid, and other position
    modes must not be served from them."""
    from slimguard.bench.kvselect import KVSelectBenchConfig, _budget, _case_budget

    base = _budget(KVSelectBenchConfig(positions=positions))
    assert ("positions" in base) is (positions != "compact")
    assert ("positions" in _case_budget(base, "streaming")) is (positions != "compact")


@pytest.mark.parametrize("score_dtype, others", [(None, {"bf16", "int8"}), ("bfloat16", {"fp32", "int8"}),
                                                 ("int8", {"fp32", "bf16"})])
def test_timing_rows_put_the_other_scoring_precisions_next_to_the_headline(score_dtype, others):
    from slimguard.bench.kvselect import KVSelectBenchConfig, timing_part

    bc = KVSelectBenchConfig(timing_lengths=[2048], prefill_repeats=1, score_dtype=score_dtype)
    rows = []
    out = timing_part(bc, 0.5, rows, {})
    decode = {r["method"] for r in rows if r["part"] == "decode_attention"}
    assert {"dense", "tokenselect_miss", "tokenselect_hit", "tokenselect@h"} <= decode
    for other in others:
        assert f"tokenselect_miss_{other}_scoring" in decode and f"decode_speedup_{other}_scoring_2048" in out
    assert len([m for m in decode if m.startswith("tokenselect_miss_")]) == len(others)
    assert [r["cold_cache"] for r in rows if r["method"] in ("dense", "tokenselect_miss")
            and r["part"] == "decode_attention"] == [True, True]
    assert out["prefill_s_2048"]["dense"] > 0 and out["decode_bound_2048"] > 0


def test_time_it_runs_before_ahead_of_every_timed_call():
    from slimguard.bench.harness import time_it

    calls = []
    t = time_it(lambda: calls.append("fn"), repeats=3, warmup=1, before=lambda: calls.append("before"))
    assert calls == ["fn"] + ["before", "fn"] * 3 and len(t.times_s) == 3


def test_time_interleaved_times_round_robin():
    from slimguard.bench.harness import time_interleaved

    calls = []
    out = time_interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=2, warmup=1,
                           before=lambda: calls.append("-"))
    assert calls == ["a", "b", "-", "a", "-", "b", "-", "a", "-", "b"]
    assert set(out) == {"a", "b"} and all(len(t.times_s) == 2 for t in out.values())
    # a GPU's asynchronous work is closed off on both sides of every timed call
    calls.clear()
    time_interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=1, warmup=0,
                     sync=lambda: calls.append("|"))
    assert calls == ["|", "a", "|", "|", "b", "|"]


def test_end_to_end_estimate_at_every_timed_length_and_the_target_reads_32k():
    """--full times 32K, 64K and 128K: each length gets its own estimate from its own attention times, and the
    32K target must not silently read the 128K one."""
    from slimguard.bench.kvselect import end_to_end_rows

    cache = {"layers": 2, "prefill_s_per_token": 1e-3, "none": {"decode_s": 0.4}}
    timing = {}
    for L, scale in ((32768, 1.0), (131072, 4.0)):
        timing[f"prefill_s_{L}"] = {"dense": 8.0 * scale, "tokenselect": 1.0 * scale}
        timing[f"decode_s_{L}"] = {"dense": 0.01 * scale, "tokenselect_hit": 0.0, "tokenselect_miss": 0.002 * scale}
    rows = end_to_end_rows(cache, timing, 0.5, [32768, 131072], e2e_tokens=64, cache_tokens=16)
    ts = {r["context"]: r for r in rows if r["method"] == "tokenselect"}
    dense = {r["context"]: r["value"] for r in rows if r["method"] == "dense"}
    # 32K by hand: dense 32.768 + 2*8 + 64*(0.025 + 2*0.01); TokenSelect 32.768 + 2*1 + 64*(0.025 + 2*0.001)
    assert abs(dense[32768] - (32.768 + 16 + 64 * 0.045)) < 1e-9
    assert abs(ts[32768]["value"] - (32.768 + 2 + 64 * 0.027)) < 1e-9
    assert ts[32768]["speedup"] != ts[131072]["speedup"]
    assert abs(ts[131072]["speedup"] - dense[131072] / ts[131072]["value"]) < 1e-12


@pytest.mark.parametrize("span, expected", [
    ((0, 4), 1.0),      # inside the sink tokens: every selection holds it
    ((20, 30), 0.0),    # far before StreamingLLM's window: no selection holds it
    ((115, 120), 1.0),  # inside the local window of every step
])
def test_recall_probe_reports_whether_the_needle_was_selected(tiny_llama, span, expected):
    """Per-case needle recall, read from the selectors' recorded index sets after every forward of generate."""
    import torch

    from slimguard.bench.kvselect import _RecallProbe, _recall_summary
    from slimguard.slim.kvselect import TokenSelectConfig, disable_token_select, enable_token_select

    ids = torch.randint(4, 128, (1, 120), generator=torch.Generator().manual_seed(3))
    rt = enable_token_select(tiny_llama, TokenSelectConfig(method="streaming", n_init=4, k=16, n_local=32,
                                                           chunk_size=32, record=True))
    probe = _RecallProbe(rt, span)
    with torch.no_grad():
        tiny_llama.generate(ids, max_new_tokens=3, do_sample=False, stopping_criteria=[probe])
    disable_token_select(tiny_llama)
    assert len(probe.steps) == 3 and probe.first == expected
    assert set(probe.first_layers) == {"0", "1"} and set(probe.first_layers.values()) == {expected}
    summary = _recall_summary([0.0], [probe.first], [probe.first_layers])
    assert summary["needle_selected"] == int(expected == 1.0)
    assert summary["needle_whole_in_a_layer"] == int(expected == 1.0)
    assert summary["wrong_with_needle_selected"] == int(expected == 1.0)


def test_recall_summary_skips_cases_without_recall():
    from slimguard.bench.kvselect import _recall_summary

    assert _recall_summary([1.0, 0.0], [None, None]) == {}
    s = _recall_summary([1.0, 0.0, 0.0, 1.0], [0.9, 1.0, 0.1, None])
    assert (s["recall_n"], s["needle_selected"], s["wrong_with_needle_selected"], s["right_without_needle_selected"]) \
        == (3, 2, 1, 0)
    assert "needle_whole_in_a_layer" not in s  # no per-layer record: nothing claimed


def test_recall_summary_counts_cases_whose_needle_one_layer_holds_whole():
    """Mean recall 0.5 (below the 0.8 bar) while layer 1 holds the whole needle: selected in a layer, not on average."""
    from slimguard.bench.kvselect import _recall_summary

    s = _recall_summary([1.0, 0.0], [0.5, 0.1], [{"0": 0.0, "1": 1.0}, {"0": 0.1, "1": 0.1}])
    assert (s["needle_selected"], s["needle_whole_in_a_layer"], s["layer_recall_n"]) == (0, 1, 2)
    assert s["layers_holding_needle_share"] == pytest.approx(0.25)


def test_peers_are_compared_with_tokenselect_on_the_same_mid_context_cases(tmp_path, fake_accuracy, monkeypatch):
    """The peer comparison runs TokenSelect again on the peers' own cases (needles at depth 0.5) and the target
    subtracts those cells, not TokenSelect's all-depth cell."""
    from slimguard.bench import kvselect as kb
    from slimguard.bench.kvselect import KVSelectBenchConfig, accuracy_part, peer_targets
    from slimguard.slim.kvselect import tasks

    seen = []
    real = tasks.make_samples

    def spy(hay, task, lengths, depths, n, seed):
        out = real(hay, task, lengths, depths, n, seed)
        seen.append((tuple(depths), [tuple(s.input_ids) for s in out]))
        return out

    monkeypatch.setattr(tasks, "make_samples", spy)
    bc = KVSelectBenchConfig(lengths=[256], depths=[0.1, 0.9], n_per_depth=1, peers=["streaming", "h2o", "quest"],
                             peer_length=256, n_init=4, k=16, n_local=16, chunk_size=16, tasks=["passkey"],
                             result="kv-peers", model_defaults=False, models=["tiny"])
    rows = []
    acc = accuracy_part(bc, rows, {}, tmp_path)
    mid = [r for r in rows if r["depths"] == "0.5"]
    assert sorted(r["method"] for r in mid) == ["h2o", "quest", "streaming", "tokenselect"]
    assert all(r["n"] == 2 for r in mid)  # as many cases as the all-depth cells
    assert len({tuple(ids) for d, ids in seen if d == (0.5,)}) == 1  # identical cases for all four
    tg = peer_targets(bc, acc, "tiny")
    ts_mid = next(r["value"] for r in mid if r["method"] == "tokenselect")
    for p in ("streaming", "h2o", "quest"):
        pv = next(r["value"] for r in mid if r["method"] == p)
        assert tg[f"tokenselect_minus_{p}_256_tiny"]["value"] == pytest.approx(ts_mid - pv)
    assert kb.MID == "@mid"


def test_cache_part_runs_with_the_full_prefill_chunk(monkeypatch, tiny_llama):
    """--full sets a 512-token chunk for the accuracy part's model defaults (model_chunk_size); the Selection Cache
    part reads the bench's own selection with its 128-token local window (a chunk wider than the window raised on the
    lent H100)."""
    from types import SimpleNamespace

    import torch

    from slimguard.bench.kvselect import KVSelectBenchConfig, cache_part
    from slimguard.core import models
    from slimguard.core.models import LoadedModel
    from slimguard.slim.kvselect import tasks

    monkeypatch.setattr(models, "load_causal_lm", lambda name, device="cpu": LoadedModel(tiny_llama, None, name))

    class Hay:
        def __init__(self, tok):
            pass

        def sample(self, task, length, depth, seed):
            g = torch.Generator().manual_seed(seed)
            return SimpleNamespace(input_ids=torch.randint(0, 128, (length,), generator=g).tolist())

    monkeypatch.setattr(tasks, "Haystack", Hay)
    bc = KVSelectBenchConfig(model_chunk_size=512, lengths=[480], n_init=4, k=16, n_local=128, decode_tokens=3,
                             thresholds=[0.9], score_dtype=None)
    rows = []
    out = cache_part(bc, rows)
    assert out["layers"] == 2 and set(out) >= {"none", "0.9"}
    assert out["none"]["agreement"] == 1.0 and 0.0 <= out["0.9"]["hit_rate"] <= 1.0
    assert [r["threshold"] for r in rows] == ["none", "0.9"]


@pytest.mark.parametrize("model, name", [("gemma3-270m", "r_selection_gemma3-270m.png"),
                                         ("/tmp/qwen/model", "r_selection_tmp-qwen-model.png"),
                                         ("qwen2.5-coder-0.5b", "r_selection_qwen2.5-coder-0.5b.png"),
                                         ("../x/", "r_selection_x.png")])
def test_selection_plot_name_is_a_plain_file_name(model, name):
    """A model given as a folder path used to put its slashes into the plot's file name, which failed at the very end
    of a long accuracy run."""
    from slimguard.bench.kvselect import selection_plot_name

    assert selection_plot_name("r", model) == name


@pytest.mark.parametrize("timing,met", [
    ({"decode_speedup_gpu_131072": 6.0, "decode_speedup_gpu_32768": 3.5, "prefill_speedup_gpu_131072": 3.2}, True),
    ({"decode_speedup_gpu_131072": 4.0, "decode_speedup_gpu_32768": 2.0, "prefill_speedup_gpu_131072": 0.5}, False)])
def test_gpu_targets_name_every_issue_target(timing, met):
    # issue 34's GPU targets are named whether measured or not; the passkey target compares with the CPU study
    from slimguard.bench.kvselect import KVSelectBenchConfig, gpu_targets

    acc = {("qwen2.5-coder-0.5b", "passkey", 32768, "tokenselect"): 1.0}
    tg = gpu_targets(KVSelectBenchConfig(), timing, {"e2e_speedup_estimated": {"131072": 2.5}}, acc,
                     {"fp32": {"value": 1.0}, "bf16": {"value": 0.99}})
    for name in ("decode_attention_speedup_gpu_128k", "decode_attention_speedup_gpu_32k",
                 "prefill_attention_speedup_gpu_128k"):
        assert tg[name]["met"] is met
    assert tg["end_to_end_speedup_gpu_128k_estimated"]["met"] and tg["gpu_parity_index_agreement_bf16"]["met"]
    assert tg["passkey_qwen_32k_gpu_minus_cpu"]["value"] == 0.0  # the CPU study scored 1.0 at 32K


@pytest.mark.parametrize("data, budget", [
    # the budgets (and so the cached-case keys) of runs made before `selection` was nested
    ({}, {"n_init": 16, "k": 128, "n_local": 128, "chunk_size": 128, "score_dtype": "int8"}),
    ({"pool_kernel": 3, "score_layers": [1], "score_dtype": None, "positions": "auto", "quest_per_head": True},
     {"n_init": 16, "k": 128, "n_local": 128, "chunk_size": 128, "pool_kernel": 3, "score_layers": [1],
      "positions": "auto", "quest_per_head": True}),
    ({"selection": {"k": 64, "tail_chunk": 0}},  # any library field, declared once, reaches the cells
     {"n_init": 16, "k": 64, "n_local": 128, "chunk_size": 128, "tail_chunk": 0, "score_dtype": "int8"}),
])
def test_selection_nests_the_library_config_and_keeps_cache_keys(data, budget):
    from slimguard.bench.kvselect import KVSelectBenchConfig, _budget
    from slimguard.core.config import build

    got = _budget(build(KVSelectBenchConfig, data))
    assert got == budget and list(got) == list(budget)  # key order is part of a cached case's key


@pytest.mark.parametrize("sets, check", [
    (["chunk_size=512", "n_local=512"], lambda c: (c.model_chunk_size, c.selection.chunk_size) == (512, 512)),
    (["selection.k=2048"], lambda c: (c.selection.k, c.selection.n_init) == (2048, 16)),
])
def test_kvselect_settings(sets, check):
    from slimguard.bench.kvselect import KVSelectBenchConfig
    from slimguard.core.config import resolve

    assert check(resolve(KVSelectBenchConfig, sets=sets))


def test_grid_owned_selection_fields_are_refused():
    from slimguard.bench.kvselect import KVSelectBenchConfig
    from slimguard.core.config import resolve
    from slimguard.core.errors import ConfigError

    with pytest.raises(ConfigError, match="selection.method is set per cell by the benchmark grid; use methods"):
        resolve(KVSelectBenchConfig, sets=["selection.method=quest"])
