"""`slimguard demo`: step selection, bad step names, and the report in a real browser."""

import pytest

from slimguard.core.errors import SlimguardError
from slimguard.demo import STEPS, available_steps, run_demo
from slimguard.report.browser import check_page, find_chromium


def test_unknown_step_is_rejected(tmp_path, monkeypatch):
    monkeypatch.setenv("SLIMGUARD_RUNS", str(tmp_path))
    with pytest.raises(SlimguardError, match="unknown demo step 'compres'"):
        run_demo(quick=True, only=["compres"])


def test_every_capability_has_a_step():
    assert [n for n, _ in STEPS] == ["model", "compress", "kvselect", "quant", "backdoor", "promptattack", "diffusion"]
    assert "model" in available_steps()


@pytest.mark.integration
def test_model_step_report_in_browser(tmp_path, monkeypatch, need_asset):
    need_asset("smollm2-135m")
    monkeypatch.setenv("SLIMGUARD_RUNS", str(tmp_path))
    report = run_demo(quick=True, only=["model"])
    assert "Paris" in report.read_text()
    if find_chromium() is None:
        pytest.skip("chromium not installed")
    res = check_page(report, tmp_path / "shot.png")
    assert res.section_ids() == ["model-layer-smollm2-135m"]
    assert res.console_errors == [] and res.distinct_colours > 3


@pytest.mark.slow
def test_full_quick_demo_every_section(tmp_path, monkeypatch):
    """The whole `slimguard demo --quick`: every present step renders a section."""
    monkeypatch.setenv("SLIMGUARD_RUNS", str(tmp_path))
    report = run_demo(quick=True)
    res = check_page(report, tmp_path / "shot.png")
    assert len(res.section_ids()) == len(available_steps())
    assert res.console_errors == []
