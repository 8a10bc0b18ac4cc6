"""The HTML report in a real headless Chromium: renders, no console errors, sections, non-blank,
fits a 1,280-px window, every demo section opens with its summary sentence, and every summary-table
number has a baseline or says why none applies. Each check is also shown failing on a page built
to break it, so none of them can pass vacuously."""

import pytest

from slimguard.report import html as H
from slimguard.report.browser import check_page, find_chromium
from slimguard.report.step import StepResult, SummaryRow

pytestmark = pytest.mark.skipif(find_chromium() is None, reason="chromium not installed (apt-get install chromium)")

LONG = "x" * 400  # one unbreakable 400-character word (a long path, a template with no spaces)


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(14, 3))  # wider than the page at 110 dpi: must scale down
    ax.bar(["a", "b"], [0.9, 0.2], color=["tab:green", "tab:red"])
    return H.figure(fig)


def _step(**kw) -> StepResult:
    rows = [SummaryRow("ASR after ONION", 0.13, n=40, baseline=0.99, baseline_name="undefended model, same inputs"),
            SummaryRow("greedy answers correct", 0.9, n=10, no_baseline="a sanity check of the loaded weights")]
    wide = H.table([{"template": LONG, "value": 0.5, **{f"c{i}": i for i in range(12)}}])
    return StepResult("Backdoor", rows,
                      html=wide + f"<p><code>{LONG}</code></p>"
                      + H.fold("<p>first words</p>", f"<pre>{LONG * 3}</pre>", "1200 chars"),
                      goal="ONION should delete the trigger words and bring the attack success rate down.",
                      shows="ASR fell from 0.99 to 0.13 (n=40) while clean accuracy stayed.", **kw)


def _write(tmp_path, sections, name="r.html", extra_script=""):
    page = H.page("test report", sections, seconds={t: 3.0 for t, _ in sections})
    if extra_script:
        page = page.replace("</body>", f"<script>{extra_script}</script></body>")
    p = tmp_path / name
    p.write_text(page)
    return p


def _page(tmp_path, extra_script=""):
    sections = [("Numbers", H.table([{"metric": "asr", "value": 0.91}])), ("Figure", _figure())]
    return _write(tmp_path, sections, extra_script=extra_script)


def test_report_renders_clean(tmp_path):
    res = check_page(_page(tmp_path), tmp_path / "shot.png")
    assert res.section_ids() == ["numbers", "figure"]
    assert res.console_errors == []
    assert res.screenshot is not None and res.distinct_colours > 5
    assert "__probe" not in res.dom  # the probe measured the page without becoming part of it


def test_console_errors_are_caught(tmp_path):
    """The checker itself must be able to fail: a page that throws is reported."""
    res = check_page(_page(tmp_path, "undefinedFunctionCall();"), tmp_path / "shot.png")
    assert res.console_errors


@pytest.mark.parametrize("extra, overflows", [
    ("", False),  # long words, wide tables, a wide figure and folded text all fit
    ('<div style="width:1900px">a fixed-width block</div>', True),
    ('<pre style="white-space:pre">' + "y " * 900 + "</pre>", True),
])
def test_horizontal_overflow_at_1280(tmp_path, extra, overflows):
    p = _write(tmp_path, [("Backdoor", H.step_section(_step(), 3.0) + extra), ("Figure", _figure())])
    res = check_page(p, tmp_path / "shot.png", width=1280)
    assert res.layout["inner_width"] == 1280
    assert (res.horizontal_overflow > 0) == overflows, (res.horizontal_overflow, res.layout["overflowing"])


def test_every_section_opens_with_its_summary_and_every_number_has_a_baseline(tmp_path):
    good = ("Backdoor", H.step_section(_step(caveat="quick run: 40 samples"), 3.0))
    # hand-written sections a StepResult would refuse: no summary sentence, a bare number, a blank reason
    no_summary = ("Bare", '<p>numbers follow</p><table class="summary-table"><tr><th>metric</th><th>this run</th>'
                          "<th>n</th><th>baseline</th><th>baseline is / why none</th></tr>"
                          "<tr><td>ASR</td><td>0.98</td><td>40</td><td>0.98</td><td>baseline</td></tr>"
                          "<tr><td>CACC</td><td>0.65</td><td></td><td>-</td><td></td></tr>"
                          "<tr><td>eligible</td><td>0.6</td><td></td><td>-</td><td>none:</td></tr></table>")
    res = check_page(_write(tmp_path, [good, no_summary]), tmp_path / "shot.png")
    assert res.sections_without_summary() == ["bare"]
    assert res.rows_without_baseline() == ["bare: CACC", "bare: eligible"]
    res = check_page(_write(tmp_path, [good], name="good.html"), tmp_path / "shot2.png")
    assert res.sections_without_summary() == [] and res.rows_without_baseline() == []
    assert res.horizontal_overflow == 0
    assert "Caveat:" in res.dom and "3 s" in res.dom  # the caveat line and the section's seconds


def test_long_text_is_folded(tmp_path):
    """The folded text is closed by default, so the page is short; the full text is in the page (no network)."""
    body = H.fold("<p>the first words</p>", "<pre>" + "word " * 4000 + "</pre>", "4000 words")
    short = check_page(_write(tmp_path, [("Fold", body)]), tmp_path / "a.png")
    long = check_page(_write(tmp_path, [("Fold", "<pre>" + "word " * 4000 + "</pre>")], name="b.html"),
                      tmp_path / "b.png")
    assert "<details" in short.dom and "word word" in short.dom
    assert short.layout["body_height"] < long.layout["body_height"] / 3
