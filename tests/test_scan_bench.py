"""`slimguard bench scan`: the rows and targets it derives from scan records (no model is trained here)."""

from __future__ import annotations

import pytest

from slimguard.bench.scan import ScanBenchConfig, _rows_and_targets, _verdicts, tpr_at_fpr


@pytest.mark.parametrize("pos, neg, fpr, want", [
    ([3.0, 2.0, 0.1], [0.0, 0.5, 1.0], 0.05, 2 / 3),   # threshold above every clean score
    ([3.0, 2.0, 0.1], [0.0, 0.5, 1.0], 0.34, 2 / 3),   # one clean model may be flagged: threshold 0.5
    ([3.0, 2.0, 0.7], [0.0, 0.5, 1.0], 0.34, 1.0),
    ([0.2], [0.0, 0.5], 0.05, 0.0),
])
def test_tpr_at_fpr_never_flags_more_clean_models_than_allowed(pos, neg, fpr, want):
    assert tpr_at_fpr(pos, neg, fpr) == pytest.approx(want)


def _scan(kind, attack, score, flagged, seed, quant="none", method="dbs", recovered=None):
    return {"kind": kind, "dataset": "rotten-tomatoes", "method": method, "quant": quant, "score": score,
            "flagged": flagged, "seconds": 60.0, "asr_inverted": 0.9, "recovered": recovered, "top_tokens": [],
            "suspected_target": 1, "seed": seed, "attack": attack, "rate": None if kind == "clean" else 0.1}


def test_rows_and_targets_name_every_issue_target_with_honest_values():
    cfg = ScanBenchConfig(methods=["dbs"], attacks=["badnets", "punc"], seeds=[0, 1], clean_seeds=[3, 4, 5])
    scans = [_scan("clean", None, s, s > 1.5, i) for i, s in enumerate([0.2, 0.4, 1.6])]
    scans += [_scan("backdoored", "badnets", s, s > 1.5, i, recovered=r) for i, (s, r) in enumerate([(3.0, True), (2.5, False)])]
    scans += [_scan("backdoored", "punc", s, s > 1.5, i, recovered=False) for i, s in enumerate([0.3, 1.0])]
    scans += [_scan("backdoored", "badnets", 3.1, True, 0, quant="int8")]
    quant = [{"attack": "badnets", "dataset": "rotten-tomatoes", "rate": 0.1, "seed": 0, "quant": q, "cacc": 0.75,
              "asr": a} for q, a in (("none", 0.98), ("int8", 0.99), ("w4a8", 0.2))]
    rows, targets = _rows_and_targets(cfg, scans, quant)
    get = lambda metric, atk: next(r["value"] for r in rows if r["metric"] == metric and r["attack"] == atk  # noqa: E731
                                   and "quant" not in r)
    assert get("auroc", "badnets") == 1.0 and get("auroc", "punc") == pytest.approx(3 / 6)
    assert get("trigger_recovery", "badnets") == 0.5 and get("flagged_rate", "clean") == pytest.approx(1 / 3)
    assert targets["badnets_auroc_rt_0.1"]["met"] is True and targets["punc_auroc_rt_0.1"]["met"] is False
    assert targets["clean_flagged_rate"]["met"] is False and targets["addsent_auroc_rt_0.1"]["value"] is None
    assert targets["quant_table_cells_attack_x_seed"]["value"] == 1  # one (attack, seed) with both slimmings
    assert {"badnets_auroc_rt_0.1", "badnets_trigger_recovery_rt_0.1", "addsent_auroc_rt_0.1", "punc_auroc_rt_0.1",
            "clean_flagged_rate", "scan_minutes_per_model_median", "quant_table_cells_attack_x_seed"} == set(targets)
    eff = _verdicts(cfg, quant, scans)
    assert eff["badnets:int8"]["effect"] == "keeps" and eff["badnets:w4a8"]["effect"] == "removes"
