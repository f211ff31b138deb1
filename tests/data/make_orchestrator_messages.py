"""Build orchestrator_messages.jsonl: real tracebacks and pytest reports, labelled by raise site.

    python tests/data/make_orchestrator_messages.py

Every message is produced by running code in a subprocess: small functions
that fail in different ways (the same exception type from different sites,
different messages from one site, repr noise such as object addresses,
temporary paths and generated names), printed raw, behind a logging prefix
or with ANSI colours; and pytest sessions with failing, parametrised tests.
The label of a message is where the exception was raised (file and line of
the innermost frame), taken from the exception object in the process that
raised it, not parsed from the text. pytest's one-line ``FAILED node - msg``
summary of a failure carries the same label as its long report, although
it names only the test, not the raising frame.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "orchestrator_messages.jsonl"

APP = '''
import json, os, random, sys, tempfile, traceback, uuid

class Job:
    def __init__(self, name):
        self.name = name

def parse_port(text):
    return int(text)

def load_config(path):
    with open(path) as f:
        return json.load(f)

def lookup(table, key):
    return table[key]

def check_budget(used, limit):
    if used > limit:
        raise ValueError(f"budget exceeded: used {used} of {limit}")

def check_shape(rows, cols):
    if rows != cols:
        raise ValueError(f"matrix must be square, got {rows}x{cols}")

def run_job(job):
    raise RuntimeError(f"job {job!r} failed")

def connect(host, port):
    raise ConnectionError(f"cannot reach {host}:{port} after {random.randint(1, 9)} attempts")

def divide(a, b):
    return a / b

def first_item(items):
    return items[0]

def attr_of(obj):
    return obj.missing_attribute

def retry_dir():
    d = tempfile.mkdtemp(prefix="run_")
    raise FileNotFoundError(2, "No such file or directory", os.path.join(d, "state.json"))

def commit_check(sha):
    raise RuntimeError(f"commit {sha} is not an ancestor of main")

def worker_timeout(name, seconds):
    raise TimeoutError(f"worker {name} timed out after {seconds}s")

def decode(payload):
    return json.loads(payload)

CASES = {
    "parse_port": lambda r: parse_port(r.choice(["http", "80a", "", "x" * r.randint(1, 5)])),
    "load_config": lambda r: load_config(os.path.join(tempfile.gettempdir(),
                                                      f"cfg-{r.randint(0, 10**6)}.json")),
    "lookup": lambda r: lookup({"a": 1}, r.choice(["user_%d" % r.randint(1, 99), "beta",
                                                  "gamma", "model-%x" % r.getrandbits(24)])),
    "check_budget": lambda r: check_budget(r.randint(101, 999), 100),
    "check_shape": lambda r: check_shape(r.randint(2, 9), r.randint(10, 20)),
    "run_job": lambda r: run_job(Job("j%d" % r.randint(0, 99))),
    "connect": lambda r: connect(r.choice(["db", "cache", "10.0.%d.%d" % (r.randint(0, 255),
                                 r.randint(0, 255))]), r.randint(1024, 65535)),
    "divide": lambda r: divide(r.randint(1, 10), 0),
    "first_item": lambda r: first_item([]),
    "attr_of": lambda r: attr_of(r.choice([Job("x"), 3, "s", None])),
    "retry_dir": lambda r: retry_dir(),
    "commit_check": lambda r: commit_check("%040x" % r.getrandbits(160)),
    "worker_timeout": lambda r: worker_timeout("worker_%s" % uuid.uuid4().hex[:8],
                                               r.randint(5, 300)),
    "decode": lambda r: decode(r.choice(["{", "[1,", "nul", "{'a': 1}"])),
}

def main(case, seed, style):
    r = random.Random(seed)
    try:
        CASES[case](r)
    except Exception as e:
        tb = traceback.extract_tb(e.__traceback__)[-1]
        label = "%s:%d" % (os.path.basename(tb.filename), tb.lineno)
        text = traceback.format_exc().rstrip("\\n")
        if style == "prefix":
            text = "\\n".join("2025-03-0%d 12:%02d:%02d,%03d ERROR orchestrator.worker[%d]: %s"
                              % (r.randint(1, 9), r.randint(0, 59), r.randint(0, 59),
                                 r.randint(0, 999), r.randint(100, 999), line)
                              for line in text.splitlines())
        elif style == "ansi":
            lines = text.splitlines()
            lines[-1] = "\\x1b[31;1m" + lines[-1] + "\\x1b[0m"
            text = "\\n".join("\\x1b[2m" + x + "\\x1b[0m" if x.startswith("  File") else x
                             for x in lines)
        elif style == "chained":
            try:
                raise KeyError("wrapper")
            except KeyError:
                pass
        print(json.dumps({"message": text, "event": label}))

if __name__ == "__main__":
    for arg in sys.argv[1:]:
        case, seed, style = arg.split(",")
        main(case, int(seed), style)
'''

TESTS = '''
import pytest

def helper(x):
    assert x % 7 != 3, f"helper rejected {x}"
    return x

@pytest.mark.parametrize("n", range(40))
def test_square(n):
    assert n * n < 900

@pytest.mark.parametrize("word", ["alpha", "beta", "gamma", "delta", "eps%d" % 5])
def test_upper(word):
    assert word.upper() == word

@pytest.mark.parametrize("n", range(30))
def test_helper(n):
    helper(n)

@pytest.mark.parametrize("n", range(12))
def test_dict(n):
    assert {"a": n, "b": 2} == {"a": n, "b": 3}

@pytest.mark.parametrize("n", range(12))
def test_raises_key(n):
    d = {}
    d["k%d" % n]

@pytest.mark.parametrize("seed", [11, 23, 42, 77, 1234, 99999])
def test_tmp(tmp_path, seed):
    p = tmp_path / ("out-%d.txt" % seed)
    assert p.exists(), f"missing {p}"
'''

CONFTEST = '''
import json, os

def pytest_runtest_logreport(report):
    if report.when == "call" and report.failed:
        crash = report.longrepr.reprcrash
        label = "%s:%d" % (os.path.basename(crash.path), crash.lineno)
        with open(os.environ["REPORTS"], "a") as f:
            f.write(json.dumps({"message": report.longreprtext, "event": label}) + "\\n")
            short = "FAILED %s - %s" % (report.nodeid, crash.message.splitlines()[0])
            f.write(json.dumps({"message": short, "event": label}) + "\\n")
'''


def main() -> None:
    rnd = random.Random(20250301)
    rows: list[dict[str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        app = Path(tmp) / "app.py"
        app.write_text(textwrap.dedent(APP))
        cases = ["parse_port", "load_config", "lookup", "check_budget", "check_shape", "run_job",
                 "connect", "divide", "first_item", "attr_of", "retry_dir", "commit_check",
                 "worker_timeout", "decode"]
        args = [f"{c},{rnd.randint(0, 10**9)},{rnd.choice(['raw', 'prefix', 'ansi', 'chained'])}"
                for c in cases for _ in range(25)]
        rnd.shuffle(args)
        out = subprocess.run([sys.executable, str(app), *args], capture_output=True, text=True,
                             check=True, cwd=tmp)
        rows += [json.loads(line) for line in out.stdout.splitlines()]
        tests = Path(tmp) / "suite"
        tests.mkdir()
        (tests / "test_suite.py").write_text(textwrap.dedent(TESTS))
        (tests / "conftest.py").write_text(textwrap.dedent(CONFTEST))
        reports = Path(tmp) / "reports.jsonl"
        for tb in ("long", "short"):
            subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                            f"--tb={tb}", "--color=yes", str(tests)],
                           capture_output=True, text=True, cwd=tmp,
                           env={**os.environ, "REPORTS": str(reports)})
        rows += [json.loads(line) for line in reports.read_text().splitlines()]
    with OUT.open("w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    print(f"{len(rows)} messages, {len({r['event'] for r in rows})} events -> {OUT}")


if __name__ == "__main__":
    main()
