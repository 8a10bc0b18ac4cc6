"""`slimguard bench quant` target arithmetic (no model): gap closed, head-to-head ratios, missing speed."""

from __future__ import annotations

import pytest

from slimguard.bench.quant import QuantBenchConfig, _targets


@pytest.mark.parametrize("edge, rtn, fp, gap_met", [(11.0, 20.0, 10.0, True), (16.0, 20.0, 10.0, False)])
def test_targets_gap_and_ratios(edge, rtn, fp, gap_met):
    res = {("edgeqat", "W4A8KV4"): {"ppl": edge}, ("rtn_per_group", "W4A8KV4"): {"ppl": rtn},
           ("lsq_ce", "W4A8KV4"): {"ppl": 12.0}, ("torchao_qat_w4a8", "W4A8KV4"): {"ppl": 30.0},
           ("edgeqat_adaptive", "W4A8KV4"): {"ppl": 13.0}, ("edgeqat_adaptive_random", "W4A8KV4"): {"ppl": 14.0}}
    t = _targets(QuantBenchConfig(), res, fp, None)
    assert t["edgeqat_w4a8kv4_rtn_gap_closed"]["value"] == pytest.approx((rtn - edge) / (rtn - fp))
    assert t["edgeqat_w4a8kv4_rtn_gap_closed"]["met"] is gap_met
    assert t["edgeqat_w4a8kv4_ppl_ratio_to_fp"]["met"] is (edge / fp <= 1.10)
    assert t["edgeqat_vs_lsq_ce_ppl_ratio"]["met"] is (12.0 >= edge)
    assert t["token_adaptive_vs_random_ppl_ratio"]["value"] == pytest.approx(14.0 / 13.0)
    assert t["gguf_decode_speedup_vs_f16"]["met"] is None and t["gguf_size_ratio_vs_f16"]["value"] is None


def test_kl_targets_judge_fidelity_apart_from_perplexity():
    # CE-only can win on perplexity (domain adaptation) while drifting further from the FP model
    res = {("edgeqat", "W4A8KV4"): {"ppl": 34.0, "kl": 0.46}, ("lsq_ce", "W4A8KV4"): {"ppl": 30.6, "kl": 0.77},
           ("torchao_qat_w4a8", "W4A8KV4"): {"ppl": 42.7, "kl": 0.37},
           ("edgeqat_adaptive", "W4A8KV4"): {"ppl": 111.5, "kl": 1.43},
           ("edgeqat_adaptive_random", "W4A8KV4"): {"ppl": 112.1, "kl": 1.50}}
    t = _targets(QuantBenchConfig(), res, 49.7, None)
    assert t["token_adaptive_vs_random_kl_ratio"]["value"] == pytest.approx(1.50 / 1.43)
    assert t["edgeqat_vs_lsq_ce_ppl_ratio"]["met"] is False and t["edgeqat_vs_lsq_ce_kl_ratio"]["met"] is True
    assert t["edgeqat_vs_torchao_qat_ppl_ratio"]["met"] is True and t["edgeqat_vs_torchao_qat_kl_ratio"]["met"] is False
    assert t["edgeqat_vs_lsq_ce_kl_ratio"]["value"] == pytest.approx(0.77 / 0.46)


def test_targets_with_speed():
    sp = {"summary": {"decode_speedup_vs_f16": 2.5, "size_ratio_vs_f16": 3.0}}
    t = _targets(QuantBenchConfig(), {}, 10.0, sp)
    assert t["gguf_decode_speedup_vs_f16"]["met"] is True and t["gguf_size_ratio_vs_f16"]["met"] is False
    assert t["gguf_decode_speedup_vs_f16_fastest"]["met"] is None  # a summary without those keys judges nothing


def test_fastest_file_target_is_judged_apart_from_the_headline():
    # the headline W4A8KV4 file (q4_0 cache) can miss while the same weights with another cache type make it
    sp = {"summary": {"decode_speedup_vs_f16": 2.0, "decode_speedup_vs_f16_fastest": 2.5,
                      "size_ratio_vs_f16": 2.95, "size_ratio_vs_f16_all_q4_0": 3.49}}
    t = _targets(QuantBenchConfig(), {}, 10.0, sp)
    assert t["gguf_decode_speedup_vs_f16"]["met"] is False and t["gguf_decode_speedup_vs_f16_fastest"]["met"] is True
    assert t["gguf_size_ratio_vs_f16_all_q4_0"] == {"value": 3.49, "goal": ">= 3.5", "met": False}
    assert t["edgeqat_w4a8kv4_ppl_ratio_to_fp"]["value"] is None
    assert t["gguf_model_size_ratio_vs_f16_all_q4_0"]["met"] is None  # an older summary without weight bytes


def test_model_size_targets_are_judged_apart_from_the_file_ratios():
    # the same files by weight bytes (llama_model_size): the metadata every file carries alike is left out
    sp = {"summary": {"size_ratio_vs_f16": 2.95, "size_ratio_vs_f16_all_q4_0": 3.49,
                      "model_size_ratio_vs_f16": 2.99, "model_size_ratio_vs_f16_all_q4_0": 3.55}}
    t = _targets(QuantBenchConfig(), {}, 10.0, sp)
    assert t["gguf_size_ratio_vs_f16_all_q4_0"]["met"] is False
    assert t["gguf_model_size_ratio_vs_f16_all_q4_0"] == {"value": 3.55, "goal": ">= 3.5", "met": True}
    assert t["gguf_model_size_ratio_vs_f16"]["met"] is False


@pytest.mark.parametrize("name, file", [("quant", "quant.json"), ("quant-long", "quant/long.json")])
def test_speed_only_replaces_speed_rows_and_keeps_training(tmp_path, monkeypatch, name, file):
    """`--set speed_only=true` re-times llama.cpp: old speed rows go, perplexity rows and their targets stay."""
    import json

    from slimguard.bench import harness
    from slimguard.bench import quant as bq
    from slimguard.slim.quant import export

    results = tmp_path / "benchmarks" / "results"
    results.mkdir(parents=True)
    monkeypatch.setattr(harness, "RESULTS_DIR", results)
    monkeypatch.setenv("SLIMGUARD_RUNS", str(tmp_path / "runs"))
    (tmp_path / "runs" / f"bench-{name}").mkdir(parents=True)
    (tmp_path / "runs" / f"bench-{name}" / bq.PACKED).write_bytes(b"")
    monkeypatch.setattr(export, "load_packed", lambda path: (None, None))
    old = [{"method": "fp", "bits": "FP32", "metric": "ppl", "value": 50.0},
           {"method": "edgeqat", "bits": "W4A8KV4", "metric": "ppl", "value": 52.0},
           {"method": "edgeqat", "bits": "W4A8KV4", "metric": "kl_to_fp", "value": 0.5},
           {"method": "lsq_ce", "bits": "W4A8KV4", "metric": "kl_to_fp", "value": 0.6},
           {"method": "rtn_per_group", "bits": "W4A8KV4", "metric": "ppl", "value": 70.0},
           {"method": "llama.cpp f16", "bits": "kv f16", "metric": "decode_tok_s", "value": 8.0}]
    (results / file).parent.mkdir(parents=True, exist_ok=True)
    (results / file).write_text(json.dumps({"command": "slimguard bench quant --speed",
                                                      "config": {"eval_batches": 8, "seq_len": 64},
                                                    "rows": old, "note": "Trained on 2 cores."}))
    new = [{"method": "llama.cpp f16", "bits": "kv f16", "metric": "decode_tok_s", "value": 100.0}]
    speed = {"rows": new, "measured": "2026-11-22T22:00:00Z",
             "summary": {"decode_speedup_vs_f16": 2.5, "size_ratio_vs_f16": 3.0, "threads": 2, "load_average": 0.4}}
    monkeypatch.setattr(bq, "_heldout_windows", lambda bc, lm: [[bc.train.eval_batches, bc.train.seq_len]])
    monkeypatch.setattr(bq, "_speed", lambda bc, lm, fp, trained, threads, log, windows, source:
                        {**speed, "quantized_model_source": source, "windows": windows})
    bc = QuantBenchConfig(speed_only=True, result=name)
    path = bq._speed_only(bc, type("LM", (), {"model": None})(), "again", 2, print)
    assert path == results / file  # a named run's (a study's) speed rows go into its own file
    doc = json.loads(path.read_text())
    assert doc["speed"]["windows"] == [[8, 64]]  # llama.cpp reads the re-timed run's held-out split
    assert [r["value"] for r in doc["rows"] if r["method"].startswith("llama.cpp")] == [100.0]
    assert len(doc["rows"]) == 6
    assert doc["targets"]["edgeqat_vs_lsq_ce_kl_ratio"]["value"] == pytest.approx(0.6 / 0.5)  # KL rows kept too
    assert doc["targets"]["gguf_decode_speedup_vs_f16"] == {"value": 2.5, "goal": ">= 2.4", "met": True}
    assert doc["targets"]["edgeqat_w4a8kv4_rtn_gap_closed"]["value"] == pytest.approx(18 / 20)
    assert "measured 2026-11-22T22:00:00Z (2 threads, load average 0.4)" in doc["note"]
    assert "EdgeQAT model saved in" in doc["note"] and "not importable" not in doc["note"]
    assert doc["command"] == "slimguard bench quant --speed && again"
    again = json.loads(bq._speed_only(bc, type("LM", (), {"model": None})(), "again", 2, print).read_text())
    assert again["note"].count("Re-timed") == 1 and again["command"] == "slimguard bench quant --speed && again"


@pytest.mark.parametrize("speed, has, lacks", [
    (None, [], ["llama.cpp"]),
    ({"measured": "T", "quantized_model_source": "M", "summary": {"threads": 2, "load_average": 1.0}},
     ["measured T (2 threads, load average 1.0) on M."], ["not importable"]),
    ({"measured": "T", "quantized_model_source": "M", "summary": {"threads": 1, "load_average": 9.0},
      "from_cache": "runs/bench-quant/speed.json"}, ["load average 9.0", "taken from runs/bench-quant/speed.json"], []),
])
def test_speed_note_says_where_speed_rows_come_from(speed, has, lacks):
    from slimguard.bench.quant import _speed_note

    note = _speed_note(speed)
    assert all(h in note for h in has) and not any(x in note for x in lacks)


def test_llama_cpp_nll_matches_torch_cross_entropy():
    """Perplexity inside llama.cpp uses the torch evaluation's arithmetic: row i of the logits scores token i + 1."""
    import torch

    from slimguard.slim.quant.speed import next_token_nll

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(9, 50, generator=g) * 4  # one row more than needed, as llama.cpp's score buffer has
    tokens = torch.randint(0, 50, (8,), generator=g)
    ref = torch.nn.functional.cross_entropy(logits[:7].double(), tokens[1:], reduction="sum")
    assert next_token_nll(logits.numpy(), tokens.tolist()) == pytest.approx(float(ref), rel=1e-9)
    shifted = next_token_nll(logits[1:].numpy(), tokens.tolist())  # an off-by-one would score other rows
    assert shifted != pytest.approx(float(ref), rel=1e-3)


def test_windows_flatten_eval_batches_in_order():
    import torch

    from slimguard.bench.quant import _windows

    b = [torch.arange(6).reshape(2, 3), torch.arange(6, 9).reshape(1, 3)]
    assert _windows(b) == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]


def test_speed_note_names_contexts_and_runtime_perplexity():
    from slimguard.bench.quant import _speed_note

    sp = {"measured": "T", "quantized_model_source": "M", "prompt_tokens": 128, "contexts": [1024, 4096],
          "summary": {"threads": 2, "load_average": 0.5, "ppl_f16": 47.98, "eval_tokens": 378}}
    note = _speed_note(sp)
    assert "after 128 prompt tokens (the headline) and after 1024, 4096 tokens" in note
    assert "same 378 held-out tokens as the torch rows (F16 GGUF 47.98)" in note


def test_speed_cache_is_kept_per_result(tmp_path, monkeypatch):
    from slimguard.slim.quant.speed import speed_cache

    monkeypatch.setenv("SLIMGUARD_RUNS", str(tmp_path))
    assert speed_cache() == tmp_path / "bench-quant" / "speed.json"
    assert speed_cache("quant-steps40") == tmp_path / "bench-quant-steps40" / "speed.json"


def test_gguf_timing_is_round_robin_over_loaded_files(monkeypatch):
    """Every round times each GGUF once (load drift is shared), and each file decodes from the context it
    was asked for, in its own KV state."""
    from slimguard.slim.quant import speed

    log = []

    class FakeLlama:
        def __init__(self, label):
            self.label, self.n_tokens = label, 0

        def reset(self):
            self.n_tokens = 0

        def eval(self, toks):
            log.append((self.label, self.n_tokens, len(toks)))
            self.n_tokens += len(toks)

    def decode(llm, toks, start):
        log.append((llm.label, start, toks))

    monkeypatch.setattr(speed, "_load", lambda path, **kw: FakeLlama(str(path)))
    monkeypatch.setattr(speed, "decode_tokens_at", decode)
    monkeypatch.setattr(speed, "model_bytes", lambda llm: len(llm.label))
    out = speed.time_ggufs({"a": ("a.gguf", "f16"), "b": ("b.gguf", "q4_0")}, threads=1, prompt_tokens=8,
                           decode_tokens=3, contexts=(20,), repeats=4)
    assert set(out) == {"a", "b"} and set(out["a"]["decode_tok_s_at"]) == {8, 20}
    assert out["a"]["model_bytes"] == len("a.gguf")
    runs = [(lb, n) for lb, n, toks in log if isinstance(toks, list)]  # decode runs: (file, position they start at)
    assert all(len(toks) == 3 for *_, toks in log if isinstance(toks, list))
    files = [lb for lb, _ in runs]
    assert files == ["a.gguf", "b.gguf"] * (len(files) // 2)  # alternating, never two runs of one file in a row
    assert {n for _, n in runs} == {8, 20}  # every run starts from its prefilled context


def test_raw_decode_continues_exactly_where_eval_would():
    """llama-bench-style decode (one llama_decode per token at explicit positions, after dropping the KV
    entries past ``start``) leaves the model in the state Llama.eval reaches: same next-token logits."""
    llama_cpp = pytest.importorskip("llama_cpp")
    import numpy as np

    from slimguard.core import assets
    from slimguard.slim.quant.export import default_template
    from slimguard.slim.quant.speed import decode_tokens_at

    if not assets.get("smollm2-135m").is_cached():
        pytest.skip("SmolLM2 GGUF not fetched (make assets)")
    llm = llama_cpp.Llama(model_path=str(default_template("smollm2-135m")), n_ctx=64, n_threads=1, verbose=False)

    def last_logits():
        return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(llm.n_vocab(),)).copy()

    prompt, cont = [1, 504, 3458, 314, 253, 1345, 30, 378], [506, 2019, 282, 4183]
    llm.eval(prompt + cont)
    ref = last_logits()
    llm.reset()
    llm.eval(prompt + [7, 7, 7])  # positions past len(prompt) hold other tokens: they must be dropped
    decode_tokens_at(llm, cont, len(prompt))
    np.testing.assert_allclose(last_logits(), ref, rtol=1e-3, atol=1e-3)
    llm.reset()
    llm.eval(prompt + [7, 7, 7])
    decode_tokens_at(llm, cont, len(prompt) + 3)  # not dropping them reads another context
    assert np.abs(last_logits() - ref).max() > 0.1


@pytest.mark.parametrize("same_bits, met", [(None, True), ({"ppl": 33.0, "kl": 0.50}, False)])
def test_torchao_targets_use_the_same_bits_row_when_present(same_bits, met):
    # torchao's own recipe leaves K/V in full precision; with the KV4 row present EdgeQAT is judged against it
    res = {("edgeqat", "W4A8KV4"): {"ppl": 34.0, "kl": 0.46},
           ("torchao_qat_w4a8", "W4A8KV4"): {"ppl": 42.7, "kl": 0.37}}
    if same_bits:
        res[("torchao_qat_w4a8kv4", "W4A8KV4")] = same_bits
    t = _targets(QuantBenchConfig(), res, 49.7, None)
    assert t["edgeqat_vs_torchao_qat_ppl_ratio"]["met"] is met
    assert t["edgeqat_vs_torchao_qat_kl_ratio"]["met"] is (same_bits is not None)


@pytest.mark.parametrize("bits,rows", [
    ("W8A8", [(None, "torchao_qat_w8a8"), (8, "torchao_qat_w8a8kv8")]),
    ("W4A8", [(None, "torchao_qat_w4a8"), (8, "torchao_qat_w4a8kv8")]),
    ("W4A8KV4", [(None, "torchao_qat_w4a8"), (4, "torchao_qat_w4a8kv4")]),
    ("W4A4", []),
])
def test_torchao_rows_match_our_kv_bits(bits, rows):
    # our A8 fake-quantizes K/V too (at kv_bits, else a_bits): the same-bits torchao row quantizes them alike
    from slimguard.bench.quant import torchao_rows

    assert torchao_rows(bits) == rows


def _pass(f16: float, head: float, f32: float = 50.0) -> dict:
    def r(tok):
        return {"prefill_tok_s": 10 * tok, "decode_tok_s": tok, "decode_tok_s_at": {128: tok, 4096: tok / 2},
                "model_bytes": 7}
    return {("f32", "f16"): r(f32), ("f16", "f16"): r(f16), ("edgeqat_q4_0", "q4_0"): r(head)}


def test_speed_ratios_are_taken_within_a_pass_and_passes_merge_by_median():
    """A pass where the machine was slow for Q4_0 only must not pair with another pass's F16 speed."""
    import statistics

    from slimguard.slim.quant.speed import merge_passes, speed_ratios

    passes = [_pass(100, 250), _pass(140, 280), _pass(120, 180)]
    ratios = [speed_ratios(p)["decode_vs_f16"][("edgeqat_q4_0", "q4_0")] for p in passes]
    assert ratios == pytest.approx([2.5, 2.0, 1.5])
    assert ("f32", "f16") not in speed_ratios(passes[0])["decode_vs_f16"]
    assert speed_ratios(passes[0])["decode_vs_f32"] == pytest.approx(5.0)
    assert speed_ratios(passes[0])["headline_vs_f16_at"][4096] == pytest.approx(2.5)
    merged = merge_passes(passes)
    head = merged[("edgeqat_q4_0", "q4_0")]
    assert head["decode_tok_s"] == 250 and head["decode_tok_s_passes"] == [250, 280, 180]
    assert head["decode_tok_s_at"][4096] == 125 and head["model_bytes"] == 7
    # the median of within-pass ratios (2.0) is not the ratio of the medians (250 / 120 = 2.08)
    assert statistics.median(ratios) != pytest.approx(head["decode_tok_s"] / merged[("f16", "f16")]["decode_tok_s"])


def test_speed_note_lists_the_passes():
    from slimguard.bench.quant import _speed_note

    sp = {"measured": "T", "quantized_model_source": "M", "passes": 3, "timing": "round-robin",
          "summary": {"threads": 2, "load_average": 0.5, "decode_speedup_vs_f16_per_pass": [1.7, 1.66, 1.4],
                      "decode_speedup_vs_f16_fastest_per_pass": [2.6, 2.44, 1.99]}}
    note = _speed_note(sp)
    assert "medians over 3 whole timing passes" in note and "1.70x, 1.66x, 1.40x" in note and "2.44x" in note
    assert "timing passes" not in _speed_note({**sp, "passes": 1})


def test_full_budget_is_a_base_that_set_still_overrides(monkeypatch):
    """`bench quant --full --set 'bits=[W4A8KV4]'` must train one bit setting at the --full budget, on the GPU when
    there is one: the --full sizes may not override what the user set."""
    from typer.testing import CliRunner

    from slimguard.bench import quant
    from slimguard.cli.main import app

    seen = {}

    def fake_run(bc, cmd, threads, log=print):
        seen.update(bc=bc, cmd=cmd)
        return "x.json"

    monkeypatch.setattr(quant, "run_bench", fake_run)
    res = CliRunner().invoke(app, ["bench", "quant", "--full", "--set", "bits=[W4A8KV4]", "--set", "seeds=[0]"])
    assert res.exit_code == 0, res.output
    bc = seen["bc"]
    assert bc.bits == ["W4A8KV4"] and bc.seeds == [0]
    assert bc.train.steps == 300 and bc.train.batch_size == 8 and bc.train.device == "auto"
    assert bc.variants == list(quant.VARIANTS)
    assert seen["cmd"] == "slimguard bench quant --full --set 'bits=[W4A8KV4]' --set 'seeds=[0]'"


@pytest.mark.parametrize("change", [dict(steps=6), dict(seq_len=32), dict(lr=1e-4), dict(device="cuda"),
                                    dict(datasets=["friends"]), dict(batch_size=4)])
def test_a_cached_run_is_keyed_by_everything_that_changes_its_result(change):
    from slimguard.bench.quant import QuantBenchConfig, run_key

    bc = QuantBenchConfig()
    other = bc.model_copy(update={"train": bc.train.model_copy(update=change)})
    assert run_key(bc, "W4A8KV4", "edgeqat", 0) != run_key(other, "W4A8KV4", "edgeqat", 0)
    # cadence of checkpoints and worker count do not change what a run gives
    assert run_key(bc, "W4A8KV4", "edgeqat", 0) == \
        run_key(bc.model_copy(update=dict(jobs=4, checkpoint_every=10)), "W4A8KV4", "edgeqat", 0)


@pytest.mark.parametrize("item, ok", [("W4A8KV4/edgeqat/0", True), ("W4A8KV4/torchao_qat_w4a8kv4/2", True),
                                      ("W4A4/torchao_qat_w4a8/0", False), ("W4A8KV4/nope/0", False),
                                      ("W4A8KV4/edgeqat", False), ("W9/edgeqat/0", False), ("W4A8/lsq_ce/x", False)])
def test_run_only_entries_are_checked(item, ok):
    from slimguard.bench.quant import parse_run
    from slimguard.core.errors import ConfigError

    if ok:
        assert parse_run(item)[2] == int(item.rsplit("/", 1)[1])
    else:
        with pytest.raises(ConfigError, match="run_only entry"):
            parse_run(item)


def test_grid_reuses_a_finished_run_and_trains_only_the_missing_one(tmp_path, monkeypatch):
    """A grid interrupted after one run resumes: the cached run is read back, not trained again."""
    from types import SimpleNamespace

    from slimguard.bench import quant as bq
    from slimguard.core import runs
    from slimguard.slim.quant import evaluate, train

    monkeypatch.setattr(runs, "runs_root", lambda: tmp_path)
    trained = []

    def fake_train(cfg, **kw):
        trained.append(cfg.seed)
        return None, SimpleNamespace()

    monkeypatch.setattr(train, "train", fake_train)
    monkeypatch.setattr(evaluate, "evaluate", lambda model, ev, **kw: SimpleNamespace(
        ppl=10.0 + trained[-1], kl_to_fp=0.5, attn_cos=None, qk_entropy=None))
    bc = bq.QuantBenchConfig(seeds=[0, 1], variants=["lsq_ce"], torchao=False)
    first = bq._grid_run(bc, "W4A8KV4", "lsq_ce", 0, None, None, None, None, "cpu")
    assert first["ppl"] == 10.0 and trained == [0]
    again = [bq._grid_run(bc, "W4A8KV4", "lsq_ce", s, None, None, None, None, "cpu") for s in (0, 1)]
    assert trained == [0, 1] and [r["ppl"] for r in again] == [10.0, 11.0]
    assert sorted(p.name.split("-s")[1][0] for p in (tmp_path / "bench-quant" / "grid").glob("*.json")) == ["0", "1"]


@pytest.mark.parametrize("device, free_gib, jobs", [("cpu", None, 1), ("cuda", 79, 6), ("cuda", 60, 6),
                                                    ("cuda", 35, 3), ("cuda", 22, 2), ("cuda", 8, 1), ("cuda", 0, 1)])
def test_auto_jobs_fit_the_gpu_memory(device, free_gib, jobs):
    from slimguard.bench.quant import auto_jobs

    assert auto_jobs(device, None if free_gib is None else free_gib << 30) == jobs


@pytest.mark.parametrize("data, key", [
    # the cache file names of runs trained before `train` was nested: a refactor must not orphan hours of training
    ({}, "W4A8KV4-edgeqat-s0-49ddb50057ad.json"),
    ({"steps": 5, "seq_len": 64}, "W4A8KV4-edgeqat-s0-49ddb50057ad.json"),  # the flat keys of older results
    ({"train": {"steps": 5}}, "W4A8KV4-edgeqat-s0-49ddb50057ad.json"),
    ({"full": True}, "W4A8KV4-edgeqat-s0-bb840cb1fa6a.json"),
])
def test_cache_keys_are_those_of_the_flat_config(data, key):
    from slimguard.bench.quant import QuantBenchConfig, run_key
    from slimguard.core.config import build

    assert run_key(build(QuantBenchConfig, data), "W4A8KV4", "edgeqat", 0) == key


@pytest.mark.parametrize("sets, want", [
    (["train.steps=40"], dict(steps=40, seq_len=64, batch_size=2, device="cpu")),  # the other bench sizes stay
    (["steps=40"], dict(steps=40, seq_len=64)),  # a key recorded by an older result lands in its nested place
    (["full=true"], dict(steps=300, seq_len=128, batch_size=8, device="auto")),
    (["full=true", "train.steps=40"], dict(steps=40, seq_len=128)),  # --set over the preset
    (["train.quantizer_lr=0.002"], dict(quantizer_lr=0.002, steps=5)),  # any library field, declared once
])
def test_train_nests_the_library_config_under_the_bench_sizes(sets, want):
    from slimguard.bench.quant import QuantBenchConfig, _train_cfg
    from slimguard.core.config import resolve

    bc = resolve(QuantBenchConfig, sets=sets)
    tc = _train_cfg(bc, "W4A8KV4", "edgeqat", 1)
    for k, v in want.items():
        assert getattr(bc.train, k) == v and getattr(tc, k) == v
    assert (tc.seed, tc.qat.kv_bits, tc.loss.kd) == (1, 4, True)


@pytest.mark.parametrize("sets, message", [
    (["train.seed=3"], "train.seed is set per cell by the benchmark grid; use seeds=[...]"),
    (["train.qat.w_bits=8"], "train.qat is set per cell by the benchmark grid; choose bits=[...] and variants=[...]"),
    (["bits=[W9]"], "config key 'bits.0': Input should be"),
    (["train.stepz=3"], "unknown config key 'train.stepz'; did you mean 'train.steps'?"),
])
def test_bad_bench_keys_are_one_line_errors(sets, message):
    from slimguard.bench.quant import QuantBenchConfig
    from slimguard.core.config import resolve
    from slimguard.core.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        resolve(QuantBenchConfig, sets=sets)
    assert message in str(e.value) and "\n" not in str(e.value)
