"""bench backdoor: the rate plot appears only when the grid has several rates."""


def test_rate_plot_needs_two_rates(tmp_path):
    from slimguard.bench.backdoor import _plot_rates

    def rows(rates):
        return [{"dataset": ds, "method": a, "rate": r, "metric": m, "value": 0.5, "std": 0.1}
                for ds in ("rotten-tomatoes", "sms-spam") for a in ("punc", "badnets", "addsent") for r in rates
                for m in ("asr", "cacc_drop")] + [{"dataset": "sms-spam", "method": "clean", "rate": None,
                                                    "metric": "cacc", "value": 0.99, "std": 0.0}]

    assert _plot_rates(rows([0.1]), tmp_path / "one.png") is False and not (tmp_path / "one.png").exists()
    assert _plot_rates(rows([0.1, 0.01]), tmp_path / "two.png") is True
    assert (tmp_path / "two.png").stat().st_size > 5000


def test_a_section_run_keeps_the_other_datasets_rows():
    from slimguard.bench.backdoor import _carried

    old = {"command": "slimguard bench backdoor --full", "git_commit": "abc", "timestamp": "t0",
           "rows": [{"dataset": d, "method": "punc", "metric": "asr", "rate": 0.1, "value": 0.9}
                    for d in ("rotten-tomatoes", "sms-spam")],
           "provenance": {"sms-spam": {"command": "older", "git_commit": "0ld", "timestamp": "t-1"}}}
    rows, prov = _carried(old, {"rotten-tomatoes", "20newsgroups-comp-rec"})
    assert [r["dataset"] for r in rows] == ["sms-spam"]
    assert prov == {"sms-spam": {"command": "older", "git_commit": "0ld", "timestamp": "t-1"}}
    rows, prov = _carried({**old, "provenance": {}}, {"sms-spam"})
    assert [r["dataset"] for r in rows] == ["rotten-tomatoes"] and prov["rotten-tomatoes"]["git_commit"] == "abc"
    assert _carried(None, {"sms-spam"}) == ([], {})


def test_long_text_asr_goals_follow_the_issue():
    from slimguard.bench.backdoor import asr_target

    assert asr_target(0.92, 0.1, ">= 0.90")["met"] is True
    assert asr_target(0.92, 0.1)["met"] is False  # the grid's 0.95
    assert asr_target(0.99, 0.8, ">= 0.90")["met"] is False  # a collapsed victim does not count
