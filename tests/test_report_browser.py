"""The HTML report in a real headless Chromium: renders, no console errors, sections, non-blank."""

import pytest

from slimguard.report import html as H
from slimguard.report.browser import check_page, find_chromium

pytestmark = pytest.mark.skipif(find_chromium() is None, reason="chromium not installed (apt-get install chromium)")


def _page(tmp_path, extra_script=""):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 3))
    ax.bar(["a", "b"], [0.9, 0.2], color=["tab:green", "tab:red"])
    sections = [("Numbers", H.table([{"metric": "asr", "value": 0.91}])), ("Figure", H.figure(fig))]
    page = H.page("test report", sections)
    if extra_script:
        page = page.replace("</body>", f"<script>{extra_script}</script></body>")
    p = tmp_path / "r.html"
    p.write_text(page)
    return p


def test_report_renders_clean(tmp_path):
    res = check_page(_page(tmp_path), tmp_path / "shot.png")
    assert res.section_ids() == ["numbers", "figure"]
    assert res.console_errors == []
    assert res.screenshot is not None and res.distinct_colours > 5


def test_console_errors_are_caught(tmp_path):
    """The checker itself must be able to fail: a page that throws is reported."""
    res = check_page(_page(tmp_path, "undefinedFunctionCall();"), tmp_path / "shot.png")
    assert res.console_errors
