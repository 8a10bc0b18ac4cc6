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


def test_targets_with_speed():
    sp = {"summary": {"decode_speedup_vs_f16": 2.5, "size_ratio_vs_f16": 3.0}}
    t = _targets(QuantBenchConfig(), {}, 10.0, sp)
    assert t["gguf_decode_speedup_vs_f16"]["met"] is True and t["gguf_size_ratio_vs_f16"]["met"] is False
    assert t["edgeqat_w4a8kv4_ppl_ratio_to_fp"]["value"] is None
