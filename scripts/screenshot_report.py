"""Screenshot the HTML report in headless Chromium, and check that it rendered.

    python scripts/screenshot_report.py [--config learnkit.toml] [--days 30] [--output report.png]

Without ``--config`` it runs the demo in a temporary folder first. It
writes the HTML report, has Chromium (``chromium`` or ``chromium-browser``,
or ``$CHROMIUM``) render it headless to a PNG, and checks the PNG: the
expected size, and enough content (a blank page compresses to a few kB). Exit code 0
when the check passes. Look at the PNG too: the check cannot say whether
it reads well.

Install Chromium on Debian or Ubuntu with ``apt-get install -y chromium``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

WIDTH, HEIGHT = 1100, 2400


def find_chromium() -> str | None:
    for name in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's header."""
    data = path.read_bytes()[:24]
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        raise ValueError(f"{path} is not a PNG")
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def screenshot(html: Path, png: Path, chromium: str) -> None:
    subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--window-size={WIDTH},{HEIGHT}", f"--screenshot={png}", html.as_uri()],
        check=True, capture_output=True, timeout=120,
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", type=Path, help="a learnkit.toml (default: run the demo)")
    ap.add_argument("--days", default="30")
    ap.add_argument("--output", type=Path, default=Path("report.png"))
    args = ap.parse_args()
    chromium = find_chromium()
    if chromium is None:
        print("no Chromium found: apt-get install -y chromium (or set $CHROMIUM)",
              file=sys.stderr)
        return 2
    from learnkit._cli import main as learnkit

    with tempfile.TemporaryDirectory() as d:
        config = args.config
        if config is None:
            if learnkit(["demo", f"{d}/demo"], out=open(os.devnull, "w")) != 0:  # noqa: SIM115
                return 1
            config = Path(d) / "demo" / "learnkit.toml"
        html = Path(d) / "report.html"
        if learnkit(["--config", str(config), "report", "--days", args.days,
                     "--output", str(html)], out=open(os.devnull, "w")) != 0:  # noqa: SIM115
            return 1
        screenshot(html, args.output, chromium)
    width, height = png_size(args.output)
    size = args.output.stat().st_size
    # A blank page of this size compresses to a few kB; text and charts do not.
    ok = (width, height) == (WIDTH, HEIGHT) and size > 60_000
    print(f"{args.output}: {width}x{height}, {size / 1000:.0f} kB: "
          f"{'ok' if ok else 'FAILED (blank or broken page?)'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
