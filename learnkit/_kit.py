"""The kit, opened with ``learnkit.open()``: the composition root that builds every part."""

from __future__ import annotations

import asyncio
import logging
import os
import random as _random
import time
import warnings
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from . import _env
from ._aio import run_shielded
from ._alerts import Alerts
from ._analytics import AnalyticsCollector
from ._config import Config, LiveConfig, ThresholdConfig, load_config
from ._database import Database
from ._errors import KitClosedError, UnknownAttributeError, UnknownThresholdError, did_you_mean
from ._insights.generator import InsightsGenerator
from ._model import (
    DAY,
    MAX_TIME,
    RECORDABLE_OUTCOMES,
    Operation,
    bounded_repr,
    clean_message,
    clean_text,
    valid_time,
)
from ._scrub import Scrubber
from ._storage.factory import spill_place, store_for
from ._storage.protocol import SharedThresholdStore
from ._storage.spill import Spill
from ._storage.writer import Writer, WriterStats
from ._thresholds.admission import Admission, admit
from ._thresholds.controller import ThresholdController
from ._thresholds.loop import LearningLoop, LearningReport
from ._thresholds.shared import SharedThresholds
from ._tracking import (
    OperationTracker,
    Recorder,
    current_operation,
    explored_mark,
    set_current,
)

__all__ = ["Kit", "Thresholds", "open"]

log = logging.getLogger("learnkit")

Clock = Callable[[], float]


def release_from_environment(environ: Mapping[str, str] | None = None) -> tuple[str, str]:
    """``LEARNKIT_RELEASE``, and ``service.version`` of ``OTEL_RESOURCE_ATTRIBUTES``
    (``key=value,...``, values percent-encoded); "" for each that is not set."""
    from urllib.parse import unquote

    env = os.environ if environ is None else environ
    otel = ""
    for pair in env.get("OTEL_RESOURCE_ATTRIBUTES", "").split(","):
        name, _, value = pair.partition("=")
        if name.strip() == "service.version":
            otel = unquote(value.strip())
    return env.get("LEARNKIT_RELEASE", "").strip(), otel


class Thresholds(Mapping[str, int | float]):
    """Live threshold values (``kit.thresholds["max_complexity"]``).

    Reads the config in force, which follows edits of learnkit.toml by the
    controller, another process or a person, without a restart.
    """

    def __init__(self, live: LiveConfig) -> None:
        self._live = live

    def __getitem__(self, name: str) -> int | float:
        return self.settings(name).value

    def __iter__(self) -> Iterator[str]:
        return iter(self._live.config.thresholds)

    def __len__(self) -> int:
        return len(self._live.config.thresholds)

    def settings(self, name: str) -> ThresholdConfig:
        """The whole ``[thresholds.NAME]`` table in force.

        Raises:
            UnknownThresholdError: (a ``KeyError``) learnkit.toml defines no
                such threshold; the message suggests the closest name.
        """
        cfg = self._live.config
        try:
            return cfg.thresholds[name]
        except KeyError:
            known = ", ".join(cfg.thresholds) or "none"
            raise UnknownThresholdError(
                f"no threshold {name!r} in {cfg.path}{did_you_mean(name, cfg.thresholds)}; "
                f"defined: {known}"
            ) from None

    def __repr__(self) -> str:
        return f"Thresholds({dict(self)!r})"


class Kit:
    """An open learnkit: tracking, analytics, insights and thresholds.

    Made by :func:`learnkit.open`; do not construct directly. The kit is the
    composition root: it builds the store, the writer and the analysis parts
    and hands each only what it needs; none of them knows the kit.
    """

    def __init__(
        self, config: Config, *, clock: Clock | None = None,
        random: _random.Random | None = None,
        learning_loop: bool | None = None,
        read_only: bool = False,
        release: str | None = None,
    ) -> None:
        self._live = LiveConfig(config)
        self._release: str | None = None if release is None else clean_text(release)
        self._env_release, self._otel_release = release_from_environment()
        self._read_only = read_only
        self._start_loop = config.learning.enabled if learning_loop is None else learning_loop
        self._clock: Clock = clock or time.time
        self._random = random or _random.Random()
        self._loop_task: asyncio.Task[None] | None = None
        self._store = store_for(config, read_only=read_only)
        self._background: list[asyncio.Task[None]] = []
        spill = None
        if not read_only and config.storage.spill_max_mb > 0:
            directory, stem = spill_place(config)
            spill = Spill(directory, stem, int(config.storage.spill_max_mb * 2**20))
        self._writer = Writer(
            self._store,
            batch_size=config.storage.batch_size,
            flush_interval=config.storage.flush_interval,
            max_queue=config.storage.max_queue,
            scrub=self._stamp_and_scrub,
            spill=spill,
        )
        self._scrub = Scrubber(
            enabled=config.privacy.scrub, patterns=config.privacy.patterns,
            safe_keys=config.privacy.safe_keys,
        ).operation
        self._recorder = Recorder(self._writer, self._clock)
        self.database = Database(self._store, self._recorder, self._live)
        self.tracker = OperationTracker(self.database, log)
        self.analytics = AnalyticsCollector(self.database, log)
        self.insights = InsightsGenerator(self.analytics, log)
        self._change_listeners: list[Callable[[], None]] = []
        self.controller = ThresholdController(
            self.database, log, on_change=self._threshold_changed
        )
        #: Webhook alerts sent after each analysis of the learning loop (docs/alerts.md).
        self.alerts = Alerts(lambda: self._live.config.alerts, database=self.database,
                             history=self.controller.history, source=str(config.path))
        self._learning = LearningLoop(self.database, self.insights, self.controller,
                                      on_report=self.alerts.observe)
        #: What ``kit.config.update`` calls (bound once: the identity is checked).
        self._update = self.controller.update
        self.thresholds = Thresholds(self._live)
        if isinstance(self._store, SharedThresholdStore):
            self.database.shared = SharedThresholds(self._store, self._live)
        self._closed = True
        #: ``LEARNKIT_DISABLED=1``: instrumentation records nothing.
        self.disabled = _env.disabled()

    @property
    def config(self) -> Config:
        """The configuration in force (follows edits of the file, checked once a second).

        ``kit.config.update(max_complexity=6)`` sets threshold values by hand
        through the controller (see :meth:`Config.update`).
        """
        cfg = self._live.config
        cfg.bind(self._update)
        return cfg

    async def _open(self) -> None:
        await self._store.open()
        if self.database.shared is not None:
            try:
                await self.database.shared.pull()
            except BaseException:
                await self._store.aclose()
                raise
        self._closed = False
        if self._read_only:
            return
        self._writer.start()
        try:
            await self._writer.replay_orphans()
        except Exception as exc:  # learnkit's own fault: never the caller's problem
            log.error("learnkit: replaying spill files failed: %r", exc)
        self._start_background()
        if self._start_loop:
            self._loop_task = asyncio.get_running_loop().create_task(
                self._learning.run(), name="learnkit-learning-loop"
            )
        if self._store.abandoned_on_open:
            log.warning(
                "learnkit: %d operation(s) of processes that died while running them "
                "are now recorded as abandoned", self._store.abandoned_on_open,
            )

    def _check_open(self, what: str) -> None:
        if self._read_only:
            raise KitClosedError(f"{what} on a kit opened read-only ({self.config.path})")
        if self._closed:
            raise KitClosedError(
                f"{what} on a closed kit ({self.config.path}); open one with "
                "`async with learnkit.open(...)`"
            )

    def _start_background(self) -> None:
        """Following a shared store's threshold values; pruning old rows."""
        loop = asyncio.get_running_loop()
        if self.database.shared is not None:
            self._background.append(loop.create_task(
                self._follow_shared(), name="learnkit-shared-thresholds"))
        if self.config.storage.retention_days > 0:
            self._background.append(loop.create_task(
                self._prune_forever(), name="learnkit-retention"))

    async def _follow_shared(self) -> None:
        """Re-read the shared threshold values: within an analysis interval, 30 s at most."""
        shared = self.database.shared
        assert shared is not None
        while True:
            await asyncio.sleep(max(0.05, min(self.config.learning.analysis_interval / 2, 30.0)))
            try:
                await shared.pull()
            except Exception as exc:  # a lost connection: try again next time
                log.debug("learnkit: could not re-read the shared thresholds: %s", exc)

    async def prune(self) -> int:
        """Delete raw rows older than ``storage.retention_days`` now (rollups and the
        threshold history stay); the rows deleted. The kit also does this by itself,
        a minute after opening and then every hour."""
        days = self.config.storage.retention_days
        if days <= 0:
            return 0
        self._check_open("kit.prune()")
        n = await self._store.prune(self.now() - days * DAY)
        if n:
            log.info("learnkit: pruned %d row(s) older than %g day(s) from %s",
                     n, days, self._store.location)
        return n

    async def _prune_forever(self) -> None:
        await asyncio.sleep(60.0)
        while True:
            try:
                await self.prune()
            except Exception as exc:
                log.warning("learnkit: retention: could not prune old rows: %s", exc)
            await asyncio.sleep(3600.0)

    def now(self) -> float:
        """The kit's clock: Unix seconds, UTC."""
        return self._clock()

    @property
    def release(self) -> str | None:
        """The release recorded on every operation, under ``learning.release_attribute``.

        The first that is set: ``kit.release = ...`` (or ``open(release=...)``),
        the ``LEARNKIT_RELEASE`` environment variable, ``[learning] release``,
        ``service.version`` in ``OTEL_RESOURCE_ATTRIBUTES``. None when none is.
        An operation whose context already holds the attribute keeps its own.
        """
        if self._release is not None:
            return self._release or None
        return (self._env_release or self._live.config.learning.release
                or self._otel_release or None)

    @release.setter
    def release(self, value: str | None) -> None:
        # "" means "no release" even when the environment or config names one.
        self._release = None if value is None else clean_text(value)

    def on_threshold_change(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback()`` (on the kit's loop) after thresholds changed: applied by the
        controller, rolled back, or set by hand. Returns a function that unsubscribes;
        read what changed with ``await kit.controller.history()``."""
        self._change_listeners.append(callback)

        def unsubscribe() -> None:
            if callback in self._change_listeners:
                self._change_listeners.remove(callback)

        return unsubscribe

    def _threshold_changed(self) -> None:
        self.insights.invalidate()
        for callback in list(self._change_listeners):
            try:
                callback()
            except Exception as exc:  # a listener's bug must not undo a change
                log.error("learnkit: a threshold-change listener failed: %r", exc)

    def _stamp_and_scrub(self, op: Operation) -> None:
        """The writer's hook before an operation becomes rows: add the release, scrub."""
        release = self.release
        if release is not None:
            attr = self._live.config.learning.release_attribute
            ctx = op.context
            if ctx is None:
                op.context = {attr: release}
            elif attr not in ctx:
                ctx[attr] = release
        self._scrub(op)

    @property
    def stats(self) -> WriterStats:
        """Counters of the writer: enqueued, written, queued, dropped, errors."""
        return self._writer.stats()

    def record(
        self,
        op_type: str,
        *,
        outcome: str,
        started_at: float,
        ended_at: float | None = None,
        key: Any = None,
        error_type: str | None = None,
        error_message: Any = None,
        context: Mapping[str, Any] | None = None,
        duration: float | None = None,
    ) -> None:
        """Record a finished operation with explicit times (backfill, import).

        Args:
            op_type: the kind of operation.
            outcome: ``success``, ``failure``, ``cancelled`` or ``skipped``.
            started_at: Unix seconds when it started.
            ended_at: Unix seconds when it ended (default: ``started_at``).
            key: the work item.
            error_type: for failures, the kind of error.
            error_message: for failures, the message.
            context: context attributes.
            duration: seconds; default ``ended_at - started_at``.

        Keys, types, messages and context are cleaned as every record is (see
        docs/reliability.md); times must be finite Unix seconds.

        Raises:
            ValueError: an argument is out of range (counted in
                ``kit.stats.rejected``); nothing is recorded.
            KitClosedError: the kit is closed.
        """
        self._check_open("kit.record()")
        if self.disabled:
            return
        if not isinstance(op_type, str) or not op_type:
            raise ValueError(
                f"op_type must be a non-empty string, got {bounded_repr(op_type, 100)}")
        if type(outcome) is not str or outcome not in RECORDABLE_OUTCOMES:
            raise ValueError(
                f"outcome {bounded_repr(outcome, 100)} is not one of "
                f"{', '.join(RECORDABLE_OUTCOMES)}"
            )
        end = started_at if ended_at is None else ended_at
        for name, v in (("started_at", started_at), ("ended_at", end)):
            if not valid_time(v):
                self._writer.reject(
                    None, f"record({op_type!r}): {name} = {bounded_repr(v, 100)}")
                raise ValueError(
                    f"{name} must be Unix seconds as a finite number between 0 and "
                    f"{MAX_TIME:.0f}, got {bounded_repr(v, 100)}"
                )
        if end < started_at:
            raise ValueError(f"ended_at ({end}) is before started_at ({started_at})")
        if duration is not None and (
            isinstance(duration, bool) or not isinstance(duration, (int, float))
            or not 0 <= duration <= MAX_TIME
        ):
            self._writer.reject(
                None, f"record({op_type!r}): duration = {bounded_repr(duration, 100)}")
            raise ValueError(
                "duration must be a finite number of seconds >= 0, got "
                f"{bounded_repr(duration, 100)}"
            )
        op = Operation(op_type, key, context, float(started_at), 0.0, current_operation())
        op.ended_at = float(end)
        op.duration = float(end - started_at) if duration is None else float(duration)
        op.outcome = outcome
        if outcome != "skipped":
            # Work that kit.admit() admitted to explore, recorded afterwards.
            op.admission = explored_mark(op_type)
        if outcome == "failure":
            op.error_type = "Failure" if error_type is None else clean_text(error_type)
        elif error_type is not None:
            op.error_type = clean_text(error_type)
        op.error_message = clean_message(error_message)
        self._writer.submit(op)

    def admit(self, op_type: str, /, **attrs: Any) -> Admission:
        """Should this work be attempted, given the thresholds in force?

        Checks every threshold that gates one of ``attrs`` (and ``op_type``,
        if the threshold names one). Refused work is recorded as ``skipped``;
        some of it is admitted anyway to explore (mostly the band next to
        the threshold; see docs/thresholds.md) and the next operation of
        ``op_type`` in this task is marked as explored::

            if kit.admit("process_issue", complexity=issue.complexity):
                await process_issue(issue)

        Attributes that are not numbers are not gated. Faults never raise;
        a misspelt attribute does.

        Raises:
            UnknownAttributeError: an attribute gates nothing while a gated
                attribute is missing and spelt almost the same
                (``complexty=`` for ``complexity``).
        """
        def refuse(why: str) -> None:
            self.record(op_type, outcome="skipped", started_at=self._clock(), context=attrs,
                        error_type="Refused", error_message=why)

        try:
            return admit(self.config, op_type, attrs, self._random, refuse,
                         self.database.exploration)
        except (UnknownAttributeError, KitClosedError):
            raise
        except Exception as exc:  # learnkit's fault: never in the way of the work
            log.error("learnkit: kit.admit(%r) could not decide (%r); admitted", op_type, exc)
            return Admission(True, reason=f"admitted: learnkit could not decide ({exc!r})")

    async def learn_once(self) -> LearningReport:
        """One turn of the learning loop now: analyse, judge earlier changes, apply."""
        return await self._learning.learn_once()

    async def run_learning_loop(self) -> None:
        """Run the learning loop in this task until cancelled (see ``learning.enabled``)."""
        await self._learning.run()

    async def flush(self, timeout: float | None = None) -> bool:
        """Make everything recorded so far durable; True when it all was.

        Operations still running are stored as ``running``. A storage fault is
        retried until ``timeout`` seconds pass (forever when None); it never
        raises. The timeout holds even while another process holds a lock.

        Raises:
            KitClosedError: the kit is closed.
        """
        self._check_open("kit.flush()")
        return await self._writer.flush(timeout)

    async def aclose(self, timeout: float = 10.0) -> None:
        """Flush, stop the writer and close the store. Idempotent.

        Runs to its end even if the calling task is cancelled (repeatedly, or by
        an anyio cancel scope), bounded by about ``timeout`` seconds plus the
        busy timeout; the cancellation is re-raised afterwards. Operations
        still in flight are stored as ``running`` and the session is marked so
        the next open records them as ``abandoned``.
        """
        if self._closed:
            return
        self._closed = True
        set_current(None, remove=self._recorder)
        if self._writer.forked:
            # A forked child: the writer's task, thread and loop stayed in the parent.
            self._writer.closed = True
            return
        bound = timeout + 2 * self.config.storage.busy_timeout + 5.0
        if not await run_shielded(lambda: self._close(timeout), bound):
            log.error("learnkit: closing %s took longer than %.0f s; gave up waiting",
                      self._store.location, bound)

    async def _close(self, timeout: float) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
            self._loop_task = None
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        self._background.clear()
        if self._read_only:
            await self._store.aclose()
            return
        try:
            await self.alerts.aclose(min(timeout, 10.0))
            await self.controller.drain()
            await self._writer.aclose(timeout)
        finally:
            await self._store.aclose()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            warnings.warn(
                f"learnkit kit for {self.config.path} was never closed; use "
                "`async with learnkit.open(...)` or `await kit.aclose()`",
                ResourceWarning,
                stacklevel=1,
            )

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<Kit {self.config.path} {state}>"


@asynccontextmanager
async def open(
    config_path: str | Path | None = None,
    *,
    clock: Clock | None = None,
    random: _random.Random | None = None,
    learning_loop: bool | None = None,
    read_only: bool = False,
    release: str | None = None,
) -> AsyncIterator[Kit]:
    """Open learnkit: load the config, open the store, start the writer.

    The kit becomes *current*, so ``@tracked`` functions and ``track``
    blocks record into it (unless ``LEARNKIT_DISABLED=1``: then they run
    untracked and ``kit.record`` records nothing). Leaving the block flushes everything and closes.

    Args:
        config_path: learnkit.toml; default ``$LEARNKIT_CONFIG``, else
            ``learnkit.toml``.
        clock: zero-argument callable returning Unix seconds (UTC), for tests
            and simulations; default :func:`time.time`.
        random: the random generator exploration draws from (seed it for
            reproducible simulations).
        learning_loop: start the background learning loop; default
            ``learning.enabled`` from the config.
        read_only: only read (reports, dashboards): never migrates or writes,
            works on a read-only file; recording raises ``KitClosedError``.
        release: the release to record on every operation (see
            :attr:`Kit.release`); default from the environment or the config.

    Raises:
        ConfigError: the config file is missing or invalid.
        StoreError: the database cannot be opened.
    """
    path = _env.config_path() if config_path is None else config_path
    kit = Kit(load_config(path), clock=clock, random=random,
              learning_loop=False if read_only else learning_loop, read_only=read_only,
              release=release)
    await kit._open()
    if kit.disabled and not read_only:  # LEARNKIT_DISABLED: code runs untracked, silently
        log.info("learnkit: LEARNKIT_DISABLED is set; nothing is tracked")
    elif not read_only:
        set_current(kit._recorder)
    try:
        yield kit
    finally:
        await kit.aclose()
