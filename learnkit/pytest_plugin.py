"""A pytest plugin: every test an operation, so learnkit shows which tests fail, when,
under which parameters, and which are flaky.

Off unless ``pytest --learnkit`` or ``learnkit_enabled = true`` in the pytest
configuration. Each test is recorded with

- ``op_type``: its module (``learnkit_group``: ``module``, ``file``, ``class``,
  ``function``, or any other text as one fixed type),
- ``key``: its node id,
- context: its parameters (by name; values other than numbers, strings and
  booleans as their id), ``file``, one ``mark.NAME = true`` per marker, and
  ``build`` when a CI build number is known; the commit is the kit's release
  (``LEARNKIT_RELEASE``, else ``GITHUB_SHA``, ``CI_COMMIT_SHA`` and other CI
  variables, else ``git rev-parse HEAD``),
- outcome: ``success``, ``failure`` (in setup, call or teardown; the
  exception's type and message), ``skipped`` (skips and expected failures).

At the end of the session the plugin prints what :func:`analyse_tests`
finds: flaky tests (passed and failed on the same commit), and the failure
patterns that are not explained by flaky tests. See docs/integrations.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import subprocess
import threading
import time
from collections.abc import Generator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import pytest

from ._storage.protocol import EXPORT_FIELDS

if TYPE_CHECKING:
    from ._insights.patterns import FailurePattern
    from ._kit import Kit

__all__ = ["FlakyTest", "SuiteInsights", "analyse_tests", "ci_build", "ci_commit"]

#: Environment variables naming the commit under test, first found wins.
COMMIT_VARIABLES = (
    "GITHUB_SHA", "CI_COMMIT_SHA", "BUILDKITE_COMMIT", "CIRCLE_SHA1", "TRAVIS_COMMIT",
    "BITBUCKET_COMMIT", "GIT_COMMIT", "DRONE_COMMIT_SHA", "BUILD_SOURCEVERSION",
)
#: Environment variables naming the CI build.
BUILD_VARIABLES = (
    "GITHUB_RUN_ID", "CI_PIPELINE_ID", "BUILDKITE_BUILD_NUMBER", "CIRCLE_BUILD_NUM",
    "TRAVIS_BUILD_NUMBER", "BITBUCKET_BUILD_NUMBER", "BUILD_NUMBER", "BUILD_BUILDID",
)
#: Where export_rows puts the fields analyse_tests reads.
_FIELDS = tuple(EXPORT_FIELDS.index(f) for f in (
    "op_type", "outcome", "ended_at", "key", "error_type", "error_message", "context"))
#: Markers that say how a test runs, not what it is about.
_PLUMBING_MARKS = frozenset({"parametrize", "usefixtures", "filterwarnings"})
_DEFAULT_CONFIG = """\
# Written by learnkit's pytest plugin: where test outcomes are kept.
[learning]
enabled = false

[storage]
path = "learnkit.db"
"""


def ci_commit(environ: Mapping[str, str] | None = None) -> str | None:
    """The commit a CI system says is under test (``GITHUB_SHA``, ``CI_COMMIT_SHA``, ...)."""
    env = os.environ if environ is None else environ
    for name in COMMIT_VARIABLES:
        if env.get(name, "").strip():
            return env[name].strip()
    return None


def ci_build(environ: Mapping[str, str] | None = None) -> str | None:
    """The CI build or pipeline id, if a known variable holds one."""
    env = os.environ if environ is None else environ
    for name in BUILD_VARIABLES:
        if env.get(name, "").strip():
            return env[name].strip()
    return None


def _git_head(root: Path) -> str | None:
    try:
        proc = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                              text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    head = proc.stdout.strip()
    return head if proc.returncode == 0 and re.fullmatch(r"[0-9a-f]{7,64}", head) else None


# -- what the tests say ---------------------------------------------------------------------


@attrs.frozen
class FlakyTest:
    """A test that both passed and failed on one commit."""

    #: The node id.
    test: str
    #: The commit (release) it did both on.
    commit: str
    passed: int
    failed: int
    #: One failure message.
    example: str | None


@attrs.frozen
class SuiteInsights:
    """What :func:`analyse_tests` finds."""

    #: Tests that passed and failed on the same commit, most failures first.
    flaky: list[FlakyTest]
    #: Tests whose last run failed, that are not flaky.
    failing: list[str]
    #: Failure patterns of the window, apart from those only flaky tests explain.
    patterns: list[FailurePattern]
    #: Patterns whose failures are all failures of flaky tests: flakiness, not a
    #: condition under which tests fail.
    explained_by_flaky: list[FailurePattern]
    #: Tests (operations) and days analysed.
    tests: int
    days: float


def _template_regex(template: str) -> re.Pattern[str]:
    parts = [re.escape(p) for p in template.split("<*>")]
    return re.compile(".*".join(parts), re.S)


def _holds(p: FailurePattern, row: dict[str, Any], attr_value: Any) -> bool:
    """Whether a stored failure matches a context pattern's condition."""
    v, c = attr_value, p.condition
    try:
        if c == "==":
            return bool(v == p.value)
        if c == "in":
            return v in (p.value or ())
        if c == ">":
            return v is not None and v > p.value
        if c == "<=":
            return v is not None and v <= p.value
        if c == "<":
            return v is not None and v < p.value
        if c == ">=":
            return v is not None and v >= p.value
    except TypeError:
        return False
    return False


def _matches(p: FailurePattern, row: dict[str, Any]) -> bool:
    if p.op_type is not None and row["op_type"] != p.op_type:
        if p.kind != "error_cluster":
            return False
    if p.error_type is not None and row["error_type"] != p.error_type:
        return False
    if p.kind == "error_cluster":
        if p.template is None:
            return True
        from ._insights.clustering import signature

        # Templates are mined from the coarse signatures stored at write time.
        sig = signature((row["error_message"] or "")[:2000], coarse=True)
        return bool(_template_regex(p.template).fullmatch(sig))
    if p.kind == "context" and p.attribute is not None:
        ctx = row["context"] or {}
        return p.attribute in ctx and _holds(p, row, ctx[p.attribute])
    if p.kind == "change_point" and p.at is not None:
        after = p.condition == ">="
        return bool(row["ended_at"] >= p.at) == after
    return True  # temporal: every failure of the type is evidence


async def analyse_tests(kit: Kit, days: float | None = None) -> SuiteInsights:
    """Flaky tests, failing tests and the failure patterns of the last ``days``
    (default ``learning.window_days``), as recorded by the plugin.

    A test is flaky when it passed and failed on one commit (the release
    attribute). A pattern is set apart as ``explained_by_flaky`` when every
    failure it rests on is a failure of a flaky test: the tests did not fail
    *because of* that context, they are flaky.
    """
    from ._model import DAY

    days = kit.insights.window(days)
    now = kit.now()
    attr = kit.config.learning.release_attribute
    summary = await kit.insights.generate_summary(days)
    failures: list[dict[str, Any]] = []
    by_commit: dict[tuple[str, str], list[int]] = {}
    examples: dict[tuple[str, str], str] = {}
    last: dict[str, str] = {}
    n = 0
    async for chunk in kit.database.store.export_rows(since=now - days * DAY):
        for row in chunk:
            op_type, outcome, ended, key, et, msg, ctx_text = (row[i] for i in _FIELDS)
            if key is None or outcome not in ("success", "failure") or ended >= now:
                continue
            n += 1
            ctx = json.loads(ctx_text) if isinstance(ctx_text, str) else (ctx_text or {})
            last[key] = outcome
            commit = ctx.get(attr)
            if isinstance(commit, str) and commit:
                counts = by_commit.setdefault((key, commit), [0, 0])
                counts[outcome == "failure"] += 1
                if outcome == "failure":
                    examples.setdefault((key, commit), msg or et or "")
            if outcome == "failure":
                failures.append({"op_type": op_type, "key": key, "error_type": et,
                                 "error_message": msg, "context": ctx, "ended_at": ended})
    flaky = sorted(
        (FlakyTest(test=k, commit=c, passed=p, failed=f, example=examples.get((k, c)))
         for (k, c), (p, f) in by_commit.items() if p and f),
        key=lambda t: (-t.failed, t.test),
    )
    flaky_tests = {t.test for t in flaky}
    patterns: list[FailurePattern] = []
    explained: list[FailurePattern] = []
    for p in summary["failure_patterns"]:
        matched = [r for r in failures if _matches(p, r)]
        if matched and all(r["key"] in flaky_tests for r in matched):
            explained.append(p)
        else:
            patterns.append(p)
    failing = sorted(k for k, o in last.items() if o == "failure" and k not in flaky_tests)
    return SuiteInsights(flaky=flaky, failing=failing, patterns=patterns,
                         explained_by_flaky=explained, tests=n, days=days)


# -- the kit, on a loop of its own ----------------------------------------------------------


class _KitThread:
    """An open kit whose event loop runs in a background thread (pytest is sync)."""

    def __init__(self, config_path: Path, release: str | None) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="learnkit-pytest",
                                        daemon=True)
        self._thread.start()
        self._stack = contextlib.AsyncExitStack()
        self.kit: Kit = self.run(self._open(config_path, release))

    async def _open(self, config_path: Path, release: str | None) -> Kit:
        import learnkit

        from ._tracking import set_current

        kit = await self._stack.enter_async_context(
            learnkit.open(config_path, learning_loop=False))
        # Not the current kit: code under test that uses @tracked must not record
        # into the test suite's database.
        set_current(None, remove=kit.database.recorder)
        if release is not None and kit.release is None:
            kit.release = release
        return kit

    def run(self, coro: Any, timeout: float = 120.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        try:
            self.run(self._stack.aclose())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self.loop.close()


# -- the plugin -----------------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("learnkit", "learnkit: learn from test outcomes")
    group.addoption("--learnkit", action="store_true", default=None,
                    help="record every test as a learnkit operation (learnkit_enabled)")
    group.addoption("--learnkit-config", default=None,
                    help="learnkit.toml to record into (learnkit_config)")
    parser.addini("learnkit_enabled", "record every test as a learnkit operation",
                  type="bool", default=False)
    parser.addini("learnkit_config", "learnkit.toml to record into (default: LEARNKIT_CONFIG, "
                  "else learnkit.toml in the rootdir, else one kept in the pytest cache)",
                  default="")
    parser.addini("learnkit_group", "op_type of a test: module, file, class, function, or a "
                  "fixed name", default="module")
    parser.addini("learnkit_summary", "print flaky tests and failure patterns at the end",
                  type="bool", default=True)


def _enabled(config: pytest.Config) -> bool:
    flag = config.getoption("learnkit", None)
    return bool(flag) if flag is not None else bool(config.getini("learnkit_enabled"))


def pytest_configure(config: pytest.Config) -> None:
    if _enabled(config) and not os.environ.get("LEARNKIT_DISABLED"):
        config.pluginmanager.register(_Recorder(config), "learnkit-recorder")


def _config_path(config: pytest.Config) -> Path:
    given = (config.getoption("learnkit_config", None) or config.getini("learnkit_config")
             or os.environ.get("LEARNKIT_CONFIG", ""))
    if given:
        p = Path(str(given))
        return p if p.is_absolute() else config.rootpath / p
    local = config.rootpath / "learnkit.toml"
    if local.is_file():
        return local
    cache = getattr(config, "cache", None)
    folder = cache.mkdir("learnkit") if cache is not None else config.rootpath / ".learnkit"
    folder.mkdir(parents=True, exist_ok=True)
    path = Path(folder) / "learnkit.toml"
    if not path.exists():
        path.write_text(_DEFAULT_CONFIG)
    return path


def _param_value(value: Any, ident: str) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return ident


class _Recorder:
    """The plugin's state for one session; registered only when enabled."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.group = str(config.getini("learnkit_group") or "module")
        self.path = _config_path(config)
        release = ci_commit() or _git_head(config.rootpath)
        self.build = ci_build()
        self.worker = hasattr(config, "workerinput")  # pytest-xdist
        self.kits = _KitThread(self.path, release)
        self.kit = self.kits.kit
        self.recorded = 0
        self.insights: SuiteInsights | None = None
        self.error: str | None = None

    # -- per test -------------------------------------------------------------------

    def _op_type(self, item: pytest.Item) -> str:
        module = getattr(getattr(item, "module", None), "__name__", None)
        file = item.location[0]
        if self.group == "module":
            return module or file
        if self.group == "file":
            return file
        if self.group == "class":
            cls = getattr(item, "cls", None)
            return f"{module}.{cls.__qualname__}" if cls is not None else (module or file)
        if self.group == "function":
            name = getattr(item, "originalname", None) or item.name
            cls = getattr(item, "cls", None)
            owner = f"{module}.{cls.__qualname__}" if cls is not None else module
            return f"{owner}.{name}"
        return self.group

    def _context(self, item: pytest.Item) -> dict[str, Any]:
        ctx: dict[str, Any] = {}
        callspec = getattr(item, "callspec", None)
        if callspec is not None:
            ids = callspec.id.split("-") if len(callspec.id.split("-")) == len(
                callspec.params) else [callspec.id] * len(callspec.params)
            for (name, value), ident in zip(callspec.params.items(), ids, strict=True):
                ctx[name] = _param_value(value, ident)
        for mark in item.iter_markers():
            if mark.name not in _PLUMBING_MARKS:
                ctx[f"mark.{mark.name}"] = True
        ctx["file"] = item.location[0]
        if self.build is not None:
            ctx["build"] = self.build
        return ctx

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        excinfo = call.excinfo
        if (excinfo is not None and report.failed
                and not any(r.failed for r in item.stash.get(_REPORTS, []))):
            from ._model import error_type_name

            try:
                message = str(excinfo.value)
            except Exception:
                message = f"<unprintable {excinfo.typename}>"
            if call.when != "call":
                message = f"in {call.when}: {message}"
            item.stash[_FAILURE] = (error_type_name(excinfo.type), message)
        item.stash[_REPORTS] = [*item.stash.get(_REPORTS, []), report]
        return report

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_protocol(
        self, item: pytest.Item, nextitem: pytest.Item | None
    ) -> Generator[None, object, object]:
        start = time.time()
        try:
            return (yield)
        finally:
            self._record(item, start, max(time.time(), start))

    def _record(self, item: pytest.Item, start: float, end: float) -> None:
        reports = item.stash.get(_REPORTS, [])
        error_type = message = None
        if any(r.failed for r in reports):
            outcome = "failure"
            error_type, message = item.stash.get(_FAILURE, ("Failed", None))
        elif any(r.skipped for r in reports):
            outcome = "skipped"
            xfail = any(getattr(r, "wasxfail", None) is not None for r in reports)
            error_type = "XFail" if xfail else "Skipped"
        elif reports:
            outcome = "success"
        else:
            return  # not run (interrupted)
        try:
            self.kit.record(self._op_type(item), outcome=outcome, started_at=start,
                            ended_at=end, key=item.nodeid, error_type=error_type,
                            error_message=message, context=self._context(item),
                            duration=sum(r.duration for r in reports))
            self.recorded += 1
        except Exception as exc:  # the suite's result never depends on learnkit
            self.error = f"{type(exc).__name__}: {exc}"

    # -- the end --------------------------------------------------------------------

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        async def finish() -> SuiteInsights | None:
            await self.kit.flush(timeout=60)
            if self.worker or not self.config.getini("learnkit_summary"):
                return None
            return await analyse_tests(self.kit)

        try:
            self.insights = self.kits.run(finish())
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        tr = terminalreporter
        tr.section("learnkit")
        release = self.kit.release
        tr.write_line(f"learnkit: {self.recorded} test(s) recorded in {self.path.parent}"
                      + (f" ({self.kit.config.learning.release_attribute} {release})"
                         if release else ""))
        if self.error is not None:
            tr.write_line(f"learnkit: {self.error}")
        s = self.insights
        if s is None:
            return
        tr.write_line(f"last {s.days:g} days: {s.tests} test run(s)")
        if s.flaky:
            tr.write_line(f"flaky ({len(s.flaky)}): passed and failed on the same commit")
            for t in s.flaky[:20]:
                tr.write_line(f"  FLAKY {t.test} ({t.passed} passed, {t.failed} failed "
                              f"on {t.commit[:12]})")
        if s.failing:
            tr.write_line(f"failing ({len(s.failing)}): failed in their last run")
            for name in s.failing[:20]:
                tr.write_line(f"  FAILING {name}")
        if s.patterns:
            tr.write_line("failure patterns:")
            for p in s.patterns[:10]:
                tr.write_line(f"  PATTERN {p.description}")
        if s.explained_by_flaky:
            tr.write_line(f"{len(s.explained_by_flaky)} pattern(s) set aside: only flaky "
                          "tests' failures make them")

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        self.kits.close()


_REPORTS = pytest.StashKey[list[pytest.TestReport]]()
_FAILURE = pytest.StashKey[tuple[str, str | None]]()
