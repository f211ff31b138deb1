"""The programs in examples/ run as a user would run them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(name: str, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / name), *args],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_quickstart(tmp_path: Path) -> None:
    """The quickstart records four weeks and prints what it measured."""
    out = run("quickstart.py", str(tmp_path))
    assert "success rate, last 7 days" in out and "weekly trend" in out
    assert "dropped: 0" in out


def test_four_weeks(tmp_path: Path) -> None:
    """The four-week simulation prints its weekly table and lowers the threshold."""
    out = run("four_weeks.py", str(tmp_path), "--seed", "5")
    lines = [ln for ln in out.splitlines() if ln.startswith("| Week ") and ln[7].isdigit()]
    assert len(lines) == 4
    first, last = (float(ln.split("|")[2].strip().rstrip("%")) for ln in (lines[0], lines[3]))
    assert last > first
    assert int(lines[3].split("|")[-2]) < 8
