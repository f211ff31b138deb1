"""Import and export of a million lines: time and peak memory of the real command.

    python benchmarks/bench_transfer.py [--lines 1000000] [--keep DIR]

Writes a JSON Lines file of ``--lines`` operations (three types, one in four
nested under a parent, failures with messages from a dozen templates,
a tenth of them explored), then runs each step as its own
``python -m learnkit`` process and reports its wall time, CPU time and peak
resident memory (``ru_maxrss`` of the child):

1. import into an empty database (records keep their ids);
2. the same import again (adds nothing: every record is recognised);
3. export as JSON Lines, then as CSV;
4. import of the CSV export into a second, empty database.

Memory should be flat in ``--lines``: run with ``--lines 100000`` and
compare.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIG = '[learning]\nenabled = false\n[storage]\npath = "learnkit.db"\n'
TEMPLATES = [
    "Unit tests failed: {n} of 40 in tests/test_api.py",
    "Timeout after {n} s waiting for model response",
    "HTTP 5{d}{d} from upstream api.example.com",
    "Merge conflict in src/module_{n}.py",
    "Lint failed: {n} errors (E501 line too long)",
    "Rate limited: retry after {n} seconds",
    "Out of memory in worker {n}",
    "Build failed: missing dependency pkg-{n}",
    "Assertion failed at line {n}",
    "Connection reset by peer after {n} bytes",
    "Patch did not apply cleanly to file_{n}.c",
    "Invalid JSON from tool call at column {n}",
]


def write_input(path: Path, lines: int) -> None:
    r = random.Random(1)
    t = 1_780_000_000.0
    with path.open("w", encoding="utf-8") as f:
        i = 0
        while i < lines:
            i += 1
            t += r.uniform(0.5, 2.0)
            cx = r.randint(1, 12)
            rec: dict[str, object] = {"id": i, "op_type": "process_issue",
                                      "outcome": "success", "started_at": t,
                                      "ended_at": t + 30.0, "key": f"issue-{i}",
                                      "context": {"complexity": cx, "model": r.choice("abc")}}
            if r.random() < 0.1:
                rec["explore_probability"] = 0.05
            if r.random() < cx / 14:
                rec["outcome"] = "failure"
                rec["error_type"] = "TestFailure"
                rec["error_message"] = r.choice(TEMPLATES).format(
                    n=r.randint(1, 999), d=r.randint(0, 9))
            child = None
            if i < lines and r.random() < 0.25:
                i += 1
                child = {"id": i, "parent_id": i - 1, "op_type": "run_tests",
                         "outcome": rec["outcome"], "started_at": t + 1, "ended_at": t + 20,
                         "key": f"issue-{i - 1}"}
            f.write(json.dumps(rec) + "\n")
            if child is not None:
                f.write(json.dumps(child) + "\n")


def step(name: str, argv: list[str], lines: int) -> None:
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([sys.executable, "-m", "learnkit", *argv], stdout=out,
                                stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        said, problems = out.read().strip(), err.read().strip()
    if proc.returncode != 0:
        sys.exit(f"{name} failed ({proc.returncode}): {problems}")
    cpu = usage.ru_utime + usage.ru_stime
    print(f"| {name} | {wall:.1f} s | {cpu:.1f} s | {lines / wall:,.0f} | "
          f"{lines / cpu:,.0f} | {usage.ru_maxrss / 1024:.0f} MB | "
          f"{said.splitlines()[-1][:60]} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--keep", type=Path, help="work in this directory and keep it")
    args = ap.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="learnkit-bench-transfer-"))
    work.mkdir(parents=True, exist_ok=True)
    a, b = work / "a", work / "b"
    for d in (a, b):
        d.mkdir(exist_ok=True)
        (d / "learnkit.toml").write_text(CONFIG)
        for old in d.glob("learnkit.db*"):
            old.unlink()
    src = work / "input.jsonl"
    t0 = time.perf_counter()
    write_input(src, args.lines)
    print(f"{args.lines:,} lines, {src.stat().st_size / 1e6:.0f} MB, written in "
          f"{time.perf_counter() - t0:.1f} s; {os.cpu_count()} CPUs, load "
          f"{os.getloadavg()[0]:.1f}\n")
    print("| step | wall | CPU | lines/s (wall) | lines/s (CPU) | peak RSS | output |")
    print("|---|---|---|---|---|---|---|")
    ca, cb = ["--config", str(a / "learnkit.toml")], ["--config", str(b / "learnkit.toml")]
    step("import JSON Lines", [*ca, "import", str(src)], args.lines)
    step("import again", [*ca, "import", str(src)], args.lines)
    step("export JSON Lines", [*ca, "export", "--output", str(work / "out.jsonl")], args.lines)
    step("export CSV", [*ca, "export", "--output", str(work / "out.csv")], args.lines)
    step("import CSV", [*cb, "import", str(work / "out.csv")], args.lines)
    if not args.keep:
        import shutil

        shutil.rmtree(work)


if __name__ == "__main__":
    main()
