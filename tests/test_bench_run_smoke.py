"""benchmarks/run.py runs end to end: a smoke run with tiny sizes, no timing assertions."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUN = ROOT / "benchmarks" / "run.py"
HEADER = ("measure", "learnkit", "reference", "ratio", "goal")
ROWS = (
    "`@tracked` async, success",
    "same, raising",
    "`async with track()` success",
    "sync `@tracked` success",
    "writer, realistic rows",
    "writer, simple rows",
    "weekly trend over 52 weeks",
    "`generate_summary(days=365)`",
    "`learnkit import`",
    "database size per million operations",
)
# Runs run.py as if opentelemetry were not installed.
WITHOUT_OTEL = (
    "import runpy, sys; sys.modules['opentelemetry'] = None; sys.argv = sys.argv[1:]; "
    "runpy.run_path(sys.argv[0], run_name='__main__')"
)


def has_otel() -> bool:
    try:
        import opentelemetry.sdk.trace  # noqa: F401
    except ImportError:
        return False
    return True


def run(*args: str, without_otel: bool = False) -> str:
    prefix = [sys.executable, "-c", WITHOUT_OTEL] if without_otel else [sys.executable]
    proc = subprocess.run([*prefix, str(RUN), "--quick", "--rounds", "1", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"benchmarks/run.py failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def table_rows(out: str) -> list[list[str]]:
    lines = [line for line in out.splitlines() if line.startswith("|")]
    assert lines, f"no table in the output:\n{out}"
    assert [c.strip() for c in lines[0].strip("|").split("|")] == list(HEADER)
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]


def machine_line(out: str) -> str:
    return next(line for line in out.splitlines() if line.startswith("machine:"))


@pytest.mark.slow
def test_quick_run_prints_every_row() -> None:
    """Every section runs; the table has the issue's columns and rows; checks pass."""
    out = run()
    rows = table_rows(out)
    assert len(rows) == len(ROWS)
    for row, label in zip(rows, ROWS, strict=True):
        assert row[0].startswith(label)
        assert len(row) == len(HEADER) and row[1], row
    line = machine_line(out)
    for what in ("cores", "Python", "SQLite"):
        assert what in line, line
    assert "PROBLEM" not in out
    assert "every rollup row of the built database matches" in out
    if not has_otel():
        assert "OpenTelemetry SKIPPED" in out and "not installed" in out


def test_without_opentelemetry_the_reference_is_skipped_and_said() -> None:
    """No opentelemetry: the run still succeeds and says the reference was skipped."""
    out = run("--only", "tracking", "--calls", "300", without_otel=True)
    assert "OpenTelemetry SKIPPED: opentelemetry-sdk is not installed" in out
    rows = table_rows(out)
    assert [r[0] for r in rows] == [
        "`@tracked` async, success, µs added per call, writer's work included",
        "same, raising",
        "`async with track()` success, µs added",
        "sync `@tracked` success, µs added",
    ]
    for row in rows:
        float(row[1])  # learnkit's figure is there
        assert row[2] == "OpenTelemetry: not installed" and row[3] == "—"
