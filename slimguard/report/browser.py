"""Check a rendered report in a real headless Chromium (Debian's ``chromium`` package).

Used by the tests of the HTML report: the page must render, log no console errors, contain
every expected section, and produce a screenshot that is not blank.
"""

from __future__ import annotations

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

    def section_ids(self) -> list[str]:
        return re.findall(r'<section id="([^"]+)"', self.dom)


def check_page(html_path: str | Path, screenshot: str | Path, *, width: int = 1200, height: int = 2400,
               timeout: int = 120) -> BrowserCheck:
    exe = find_chromium()
    if exe is None:
        raise SlimguardError("chromium is not installed (Debian: apt-get install chromium)")
    url = Path(html_path).resolve().as_uri()
    with tempfile.TemporaryDirectory() as profile:
        base = [exe, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"]
        dom = subprocess.run([*base, "--enable-logging=stderr", "--v=0", "--dump-dom", url],
                             capture_output=True, text=True, timeout=timeout)
        shot = subprocess.run([*base, f"--screenshot={Path(screenshot).resolve()}", url],
                              capture_output=True, text=True, timeout=timeout)
    errors = [ln for ln in dom.stderr.splitlines() if "CONSOLE" in ln and ("ERROR" in ln or "Uncaught" in ln)]
    res = BrowserCheck(dom.stdout, errors)
    p = Path(screenshot)
    if shot.returncode == 0 and p.is_file():
        from PIL import Image

        img = Image.open(p).convert("RGB").resize((200, 400))
        res.screenshot = p
        res.distinct_colours = len(set(img.getdata()))
    return res
