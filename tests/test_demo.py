"""`slimguard demo`: step selection, bad step names, the summary records, and the report in a real browser."""

import pytest

from slimguard.core.errors import SlimguardError
from slimguard.demo import STEPS, available_steps, canonical_block, run_demo
from slimguard.report.browser import check_page, find_chromium
from slimguard.report.step import SummaryRow


def test_unknown_step_is_rejected(tmp_path, monkeypatch):
    monkeypatch.setenv("SLIMGUARD_RUNS", str(tmp_path))
    with pytest.raises(SlimguardError, match="unknown demo step 'compres'"):
        run_demo(quick=True, only=["compres"])
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_every_capability_has_a_step():
    assert [n for n, _ in STEPS] == ["model", "compress", "kvselect", "quant", "backdoor", "promptattack", "diffusion"]
    assert "model" in available_steps()


@pytest.mark.parametrize("kw, error", [
    ({"baseline": 0.5, "baseline_name": "random drop"}, None),
    ({"no_baseline": "a sanity check"}, None),
    ({}, "give a baseline"),  # a bare number
    ({"no_baseline": "   "}, "give a baseline"),  # a blank reason is no reason
    ({"baseline": 0.5}, "name the baseline"),  # a baseline nobody can identify
])
def test_summary_row_needs_a_baseline_or_a_reason(kw, error):
    if error is None:
        assert SummaryRow("retention", 0.9, n=12, **kw).to_dict()["n"] == 12
    else:
        with pytest.raises(ValueError, match=error):
            SummaryRow("retention", 0.9, **kw)


@pytest.mark.parametrize("caps, featured, expect", [
    (("compress",), ("retention_at_3x",), ["compress.json", "retention_at_3x", "slimguard bench compress"]),
    (("backdoor", "defence"), (), ["backdoor.json", "defence.json"]),  # no featured key: the headline target
    (("nosuch",), (), None),
])
def test_canonical_block_reads_the_results(tmp_path, monkeypatch, caps, featured, expect):
    import json

    monkeypatch.setenv("SLIMGUARD_BENCH_DIR", str(tmp_path))
    if expect is None:
        with pytest.raises(SlimguardError, match="unknown benchmark capability"):
            canonical_block(caps, featured)
        return
    for c in caps:
        (tmp_path / f"{c}.json").write_text(json.dumps(
            {"command": f"slimguard bench {c}", "git_commit": "abc1234", "timestamp": "2026-01-01T00:00:00Z",
             "targets": {"retention_at_3x": {"value": 0.123456, "goal": ">= 0.9", "met": False},
                         "punc_asr_rt_0.1": {"value": 0.99, "goal": ">= 0.95", "met": True}}}))
    out = canonical_block(caps, featured, base=tmp_path / "runs" / "demo")
    for e in expect:
        assert e in out
    assert "0.1235" in out or not featured  # the value comes from the file, formatted
    (tmp_path / f"{caps[0]}.json").unlink()
    assert "no " in canonical_block(caps[:1], featured) and "writes it" in canonical_block(caps[:1], featured)


@pytest.mark.integration
def test_model_step_report_in_browser(tmp_path, monkeypatch, need_asset):
    need_asset("smollm2-135m")
    monkeypatch.setenv("SLIMGUARD_RUNS", str(tmp_path))
    report = run_demo(quick=True, only=["model"])
    text = report.read_text()
    assert "Paris" in text and "What it should do:" in text and "bench core" in text
    if find_chromium() is None:
        pytest.skip("chromium not installed")
    res = check_page(report, tmp_path / "shot.png", width=1280)
    assert res.section_ids() == ["model-layer-smollm2-135m"]
    assert res.console_errors == [] and res.distinct_colours > 3
    assert res.horizontal_overflow == 0, res.layout["overflowing"]
    assert res.sections_without_summary() == [] and res.rows_without_baseline() == []


@pytest.mark.slow
def test_full_quick_demo_every_section(tmp_path, monkeypatch):
    """The whole `slimguard demo --quick`: every present step renders a section that passes the page checks."""
    monkeypatch.setenv("SLIMGUARD_RUNS", str(tmp_path))
    report = run_demo(quick=True)
    res = check_page(report, tmp_path / "shot.png", width=1280)
    assert len(res.section_ids()) == len(available_steps())
    assert res.console_errors == []
    assert res.horizontal_overflow == 0, res.layout["overflowing"]
    assert res.sections_without_summary() == [] and res.rows_without_baseline() == []


@pytest.mark.parametrize("ratios, within, verdict", [
    ([0.05, 0.5, 0.6, 0.7], 0.2, "amplified: at every guidance"),  # far above the within-class fraction
    ([0.05, 0.1, 0.08, 0.1], 0.33, "not amplified"),  # far below: the model reproduces less than it saw
    ([0.1, 0.3, 0.35, 0.3], 0.33, "not distinguishable"),  # inside the interval at n=48
])
def test_diffusion_conclusion_in_words(ratios, within, verdict):
    from slimguard.guard.diffusion.demo import conclusion

    pts = [{"guidance": w, "trigger_ratio": r} for w, r in zip([0.0, 1.0, 2.0, 5.0], ratios)]
    words, low = conclusion(pts, within, 0.05, 48)
    assert words.startswith(verdict), words
    assert low == pytest.approx(min(ratios[2:]) / within)
    assert "global poison rate" in words  # every case here sits above the weaker baseline


@pytest.mark.parametrize("pieces, answer, expect", [
    (["The", " pass", " key", " is", " 4", "2", ".", " 4", "2", " is"], "42", [4, 5, 7, 8]),  # both mentions
    (["The", " key", " is", " 7", "7"], "88", []),  # digits that are not the key
])
def test_kvselect_key_positions(pieces, answer, expect):
    from slimguard.slim.kvselect.demo import key_positions
    from slimguard.slim.kvselect.tasks import LongSample

    class Tok:
        def decode(self, ids):
            return "".join(pieces[i] for i in ids)

    s = LongSample("passkey", len(pieces), 0.5, 0, list(range(len(pieces))), answer, (0, len(pieces)))
    assert key_positions(s, Tok()) == expect


@pytest.mark.parametrize("text, answer, kept", [
    ("the code is 48213 now", "48213", True), ("the code is 482 13", "48213", False),
    ("Meet in Riga.", "riga", True), ("Meet in Rigas", "Riga", False),
])
def test_compress_fact_retained(text, answer, kept):
    from slimguard.slim.compress.demo import retained

    assert retained(text, answer) is kept
