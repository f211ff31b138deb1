"""The pytest plugin, run on a generated suite in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import learnkit
from learnkit.pytest_plugin import analyse_tests, ci_build, ci_commit
from tests.conftest import rows

ROOT = Path(__file__).resolve().parents[2]

IMAGES = '''\
import pytest


@pytest.mark.parametrize("fmt", ["png", "jpg"])
@pytest.mark.parametrize("size", range(1, 13))
def test_resize(size, fmt):
    assert size <= 8, f"image too large: {size} MB"


@pytest.mark.skip(reason="not yet")
def test_later():
    pass
'''

NETWORK = '''\
import os

import pytest

RUN = int(os.environ["SUITE_RUN"])


@pytest.mark.network
@pytest.mark.parametrize("n", range(12))
@pytest.mark.parametrize("protocol", ["http", "file"])
def test_fetch(protocol, n):
    if protocol == "http":
        # passes in one run, fails in the next: flaky, whatever its parameters say
        assert (RUN + n) % 2 == 0, f"connection reset by host {n}"
'''


def run_suite(suite: Path, run: int, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("LEARNKIT_", "PYTEST_", "GITHUB_", "CI_"))}
    env.update(SUITE_RUN=str(run), LEARNKIT_RELEASE="c0ffee1", PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:randomly", "-q", *args],
        cwd=suite, env=env, capture_output=True, text=True, timeout=300,
    )


@pytest.mark.slow
async def test_the_plugin_finds_the_parameter_and_the_flaky_tests(tmp_path: Path) -> None:
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "test_images.py").write_text(IMAGES)
    (suite / "test_network.py").write_text(NETWORK)
    (suite / "pytest.ini").write_text("[pytest]\nlearnkit_enabled = true\n")

    # off unless asked: no database anywhere
    off = run_suite(suite, 0, "-o", "learnkit_enabled=false")
    assert off.returncode == 1, off.stdout + off.stderr
    assert "learnkit" not in off.stdout
    assert not list(suite.rglob("learnkit.db"))

    for run in range(1, 4):  # three CI runs of one commit; only the last one analyses
        proc = run_suite(suite, run, "-o", "learnkit_summary=false")
        assert proc.returncode == 1, proc.stdout + proc.stderr
    last = run_suite(suite, 4)
    out = last.stdout
    assert last.returncode == 1, out + last.stderr
    assert "learnkit: 49 test(s) recorded" in out, out
    assert "(release c0ffee1)" in out
    section = out.split(" learnkit ===", 1)[1].split("\n", 1)[1].split("=====", 1)[0]
    for n in range(12):
        assert f"FLAKY test_network.py::test_fetch[http-{n}] (2 passed, 2 failed on c0ffee1)" \
            in section
    assert "PATTERN" in section and "size > 8" in section, section
    assert "FAILING test_images.py::test_resize[9-png]" in section
    assert "FAILING test_network" not in section  # flaky is not failing
    assert "protocol" not in section  # not a pattern: the flaky tests make it
    assert "pattern(s) set aside: only flaky tests' failures make them" in section

    # what learnkit kept, read back in this process
    db = suite / ".pytest_cache" / "d" / "learnkit" / "learnkit.db"
    stored = rows(db)
    assert len(stored) == 4 * 49
    resize = next(r for r in stored if r["key"] == "test_images.py::test_resize[9-png]")
    assert resize["op_type"] == "test_images" and resize["outcome"] == "failure"
    assert resize["error_type"] == "AssertionError"
    assert resize["error_message"].startswith("image too large: 9 MB")
    assert json.loads(resize["context"]) == {
        "size": 9, "fmt": "png", "file": "test_images.py", "release": "c0ffee1"}
    fetch = next(r for r in stored if r["key"] == "test_network.py::test_fetch[http-3]")
    assert json.loads(fetch["context"]) == {
        "protocol": "http", "n": 3, "mark.network": True, "file": "test_network.py",
        "release": "c0ffee1"}
    skipped = next(r for r in stored if r["key"] == "test_images.py::test_later")
    assert (skipped["outcome"], skipped["error_type"]) == ("skipped", "Skipped")

    async with learnkit.open(db.parent / "learnkit.toml", read_only=True) as kit:
        found = await analyse_tests(kit)
    assert {t.test for t in found.flaky} == {
        f"test_network.py::test_fetch[http-{n}]" for n in range(12)}
    assert all(t.commit == "c0ffee1" for t in found.flaky)
    assert found.failing == sorted(
        f"test_images.py::test_resize[{s}-{f}]" for s in (9, 10, 11, 12) for f in ("png", "jpg"))
    size = [p for p in found.patterns if p.attribute == "size"]
    assert size and size[0].condition == ">" and size[0].value == 8
    # the flaky tests' failures make patterns of their own (their parameter,
    # their error cluster); those are set aside, not reported as causes
    aside = found.explained_by_flaky
    assert any(p.attribute == "protocol" and p.value == "http" for p in aside), aside
    assert any(p.kind == "error_cluster" and "connection reset" in (p.template or "")
               for p in aside)
    assert not any(p.attribute == "protocol" for p in found.patterns)
    assert not any("connection reset" in (p.template or "") for p in found.patterns)


def test_ci_variables() -> None:
    assert ci_commit({"GITHUB_SHA": "abc", "CI_COMMIT_SHA": "def"}) == "abc"
    assert ci_commit({"CI_COMMIT_SHA": " def "}) == "def"
    assert ci_commit({}) is None
    assert ci_build({"GITHUB_RUN_ID": "42"}) == "42"
    assert ci_build({}) is None
