"""Check a rendered report in a real headless Chromium (Debian's ``chromium`` package).

Used by the tests of the HTML report: the page must render, log no console errors, contain
every expected section, fit the window without horizontal scrolling, open each section with
its summary sentence, give every summary-table number a baseline or a reason, and produce a
screenshot that is not blank. The layout facts come from the browser itself: a probe script is
added to a temporary copy of the page (the report stays script-free) and writes what it
measured into the DOM that ``--dump-dom`` returns.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ..core.errors import SlimguardError

# no network at all: the report must be self-contained, and chromium's background
# services would otherwise try (and fail) to reach their hosts
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars"]

# runs after layout (load event: embedded images decoded); results go into a <script type=application/json>
PROBE = """<script>
addEventListener('load', function () {
  var W = window.innerWidth, de = document.documentElement, wide = [];
  document.querySelectorAll('body *').forEach(function (el) {
    var r = el.getBoundingClientRect();
    if (r.width > 0 && r.right > W + 0.5 && wide.length < 20) {
      wide.push(el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') + (el.className ? '.' + el.className : '')
                + ' right=' + Math.round(r.right));
    }
  });
  var sections = [];
  document.querySelectorAll('section').forEach(function (s) {
    var sum = s.querySelector(':scope > p.summary'), rows = [];
    s.querySelectorAll(':scope > table.summary-table tr').forEach(function (tr, i) {
      if (i > 0) { rows.push(Array.prototype.map.call(tr.cells, function (c) { return c.textContent.trim(); })); }
    });
    sections.push({id: s.id, summary: sum ? sum.textContent.trim() : null,
                   has_summary_table: !!s.querySelector(':scope > table.summary-table'), rows: rows});
  });
  var out = document.createElement('script');
  out.type = 'application/json';
  out.id = '__probe';
  out.textContent = JSON.stringify({inner_width: W, scroll_width: Math.max(de.scrollWidth, document.body.scrollWidth),
                                    body_height: Math.round(document.body.getBoundingClientRect().height),
                                    overflowing: wide, sections: sections});
  document.body.appendChild(out);
});
</script>"""


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        p = shutil.which(name)
        if p:
            return p
    return None


@dataclass
class BrowserCheck:
    dom: str
    console_errors: list[str] = field(default_factory=list)
    screenshot: Path | None = None
    distinct_colours: int = 0
    layout: dict = field(default_factory=dict)  # what the probe measured (inner_width, scroll_width, sections, ...)

    def section_ids(self) -> list[str]:
        return re.findall(r'<section id="([^"]+)"', self.dom)

    @property
    def horizontal_overflow(self) -> int:
        """Pixels the page is wider than the window (0: no horizontal scroll bar)."""
        return max(0, int(self.layout["scroll_width"]) - int(self.layout["inner_width"]))

    def sections_without_summary(self) -> list[str]:
        """Sections with a summary table but no opening summary sentence (what it should do + what this run shows)."""
        return [s["id"] for s in self.layout.get("sections", [])
                if s["has_summary_table"] and not _is_summary(s["summary"])]

    def rows_without_baseline(self) -> list[str]:
        """``section: metric`` of every summary-table row whose number has neither a baseline nor a stated reason.

        Columns: metric, this run, n, baseline, baseline is / why none (``slimguard.report.html.SUMMARY_COLS``)."""
        bad = []
        for s in self.layout.get("sections", []):
            for cells in s["rows"]:
                metric, base, what = (cells + [""] * 5)[0], (cells + [""] * 5)[3], (cells + [""] * 5)[4]
                named = base not in ("", "-") and what != "" and not what.startswith("none")
                reason = base in ("", "-") and what.startswith("none:") and len(what) > len("none:") + 3
                if not (named or reason):
                    bad.append(f"{s['id']}: {metric}")
        return bad


def _is_summary(text: str | None) -> bool:
    # both sentences, each with some words: "What it should do: ... This run: ..."
    if not text or "What it should do:" not in text or "This run:" not in text:
        return False
    goal, _, shows = text.partition("What it should do:")[2].partition("This run:")
    return len(goal.split()) >= 4 and len(shows.split()) >= 4


def check_page(html_path: str | Path, screenshot: str | Path, *, width: int = 1280, height: int = 2400,
               timeout: int = 120) -> BrowserCheck:
    exe = find_chromium()
    if exe is None:
        raise SlimguardError("chromium is not installed (Debian: apt-get install chromium)")
    src = Path(html_path).resolve()
    with tempfile.TemporaryDirectory() as profile:
        # the probed copy sits beside the original so relative links resolve the same way
        probed = src.with_name(f".probe-{src.name}")
        text = src.read_text(encoding="utf-8")
        probed.write_text(text.replace("</body>", PROBE + "</body>") if "</body>" in text else text + PROBE,
                          encoding="utf-8")
        try:
            base = [exe, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"]
            dom = subprocess.run([*base, "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000",
                                  "--dump-dom", probed.as_uri()], capture_output=True, text=True, timeout=timeout)
        finally:
            probed.unlink(missing_ok=True)
        shot = subprocess.run([*base, f"--screenshot={Path(screenshot).resolve()}", src.as_uri()],
                              capture_output=True, text=True, timeout=timeout)
    errors = [ln for ln in dom.stderr.splitlines() if "CONSOLE" in ln and ("ERROR" in ln or "Uncaught" in ln)]
    m = re.search(r'<script type="application/json" id="__probe">(.*?)</script>', dom.stdout, re.S)
    layout = json.loads(m.group(1)) if m else {}
    # the probe's own markup is not part of the page under test
    page_dom = re.sub(r"<script>\s*addEventListener\('load'.*?</script>", "", dom.stdout, flags=re.S)
    page_dom = page_dom.replace(m.group(0), "") if m else page_dom
    res = BrowserCheck(page_dom, errors, layout=layout)
    p = Path(screenshot)
    if shot.returncode == 0 and p.is_file():
        from PIL import Image

        img = Image.open(p).convert("RGB").resize((200, 400))
        res.screenshot = p
        res.distinct_colours = len(set(img.getdata()))
    return res
