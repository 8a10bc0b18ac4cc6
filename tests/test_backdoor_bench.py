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
