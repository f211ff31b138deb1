"""The HTML report rendered by headless Chromium (scripts/screenshot_report.py).

Skips only when no Chromium is installed; .ci/run installs it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from screenshot_report import find_chromium, png_size  # noqa: E402


@pytest.mark.slow
@pytest.mark.skipif(find_chromium() is None, reason="no Chromium (apt-get install -y chromium)")
def test_html_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    png = tmp_path / "report.png"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "screenshot_report.py"),
                           "--output", str(png)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert png_size(png) == (1100, 2400)
    assert png.stat().st_size > 60_000 and "ok" in proc.stdout
