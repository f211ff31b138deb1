"""The kit, opened with ``learnkit.open()``: the composition root that builds every part."""

from __future__ import annotations

import asyncio
import logging
import math
import random as _random
import time
import warnings
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from ._analytics import AnalyticsCollector
from ._config import Config, LiveConfig, ThresholdConfig, load_config
from ._database import Database
from ._insights.generator import InsightsGenerator
from ._model import DAY, RECORDABLE_OUTCOMES, Operation
from ._storage.factory import store_for
from ._storage.protocol import SharedThresholdStore
from ._storage.writer import Writer, WriterStats
from ._thresholds.admission import Admission, admit
from ._thresholds.controller import ThresholdController
from ._thresholds.loop import LearningLoop, LearningReport
from ._thresholds.shared import SharedThresholds
from ._tracking import OperationTracker, Recorder, _current, set_current

__all__ = ["Kit", "Thresholds", "open"]

log = logging.getLogger("learnkit")

Clock = Callable[[], float]


class Thresholds(Mapping[str, int | float]):
    """Live threshold values (``kit.thresholds["max_complexity"]``).

    Reads the config in force, which follows edits of learnkit.toml by the
    controller, another process or a person, without a restart.
    """

    def __init__(self, live: LiveConfig) -> None:
        self._live = live

    def __getitem__(self, name: str) -> int | float:
        return self._live.config.thresholds[name].value

    def __iter__(self) -> Iterator[str]:
        return iter(self._live.config.thresholds)

    def __len__(self) -> int:
        return len(self._live.config.thresholds)

    def settings(self, name: str) -> ThresholdConfig:
        """The whole ``[thresholds.NAME]`` table in force."""
        return self._live.config.thresholds[name]

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
    ) -> None:
        self._live = LiveConfig(config)
        self._start_loop = config.learning.enabled if learning_loop is None else learning_loop
        self._clock: Clock = clock or time.time
        self._random = random or _random.Random()
        self._loop_task: asyncio.Task[None] | None = None
        self._store = store_for(config)
        self._background: list[asyncio.Task[None]] = []
        self._writer = Writer(
            self._store,
            batch_size=config.storage.batch_size,
            flush_interval=config.storage.flush_interval,
            max_queue=config.storage.max_queue,
        )
        self._recorder = Recorder(self._writer, self._clock)
        self.database = Database(self._store, self._recorder, self._live)
        self.tracker = OperationTracker(self.database, log)
        self.analytics = AnalyticsCollector(self.database, log)
        self.insights = InsightsGenerator(self.analytics, log)
        self.controller = ThresholdController(
            self.database, log, on_change=self.insights.invalidate
        )
        self._learning = LearningLoop(self.database, self.insights, self.controller)
        self.thresholds = Thresholds(self._live)
        if isinstance(self._store, SharedThresholdStore):
            self.database.shared = SharedThresholds(self._store, self._live)
        self._closed = True

    @property
    def config(self) -> Config:
        """The configuration in force (follows edits of the file, checked once a second)."""
        return self._live.config

    async def _open(self) -> None:
        await self._store.open()
        if self.database.shared is not None:
            try:
                await self.database.shared.pull()
            except BaseException:
                await self._store.aclose()
                raise
        self._writer.start()
        self._closed = False
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
        key: str | None = None,
        error_type: str | None = None,
        error_message: str | None = None,
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

        Raises:
            ValueError: an argument is out of range; nothing is recorded.
        """
        if not isinstance(op_type, str) or not op_type:
            raise ValueError(f"op_type must be a non-empty string, got {op_type!r}")
        if outcome not in RECORDABLE_OUTCOMES:
            raise ValueError(
                f"outcome {outcome!r} is not one of {', '.join(RECORDABLE_OUTCOMES)}"
            )
        end = started_at if ended_at is None else ended_at
        for name, v in (("started_at", started_at), ("ended_at", end)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"{name} must be Unix seconds as a finite number, got {v!r}")
        if end < started_at:
            raise ValueError(f"ended_at ({end}) is before started_at ({started_at})")
        op = Operation(
            op_type, None if key is None else str(key), dict(context) if context else None,
            float(started_at), 0.0, _current.get(),
        )
        op.ended_at = float(end)
        op.duration = float(end - started_at) if duration is None else float(duration)
        op.outcome = outcome
        if outcome == "failure":
            op.error_type = error_type or "Failure"
        elif error_type is not None:
            op.error_type = error_type
        op.error_message = error_message
        self._writer.submit(op)

    def admit(self, op_type: str, /, **attrs: Any) -> Admission:
        """Should this work be attempted, given the thresholds in force?

        Checks every threshold that gates one of ``attrs`` (and ``op_type``,
        if the threshold names one). Refused work is recorded as ``skipped``;
        a fraction ``explore`` of it is admitted anyway and the next
        operation of ``op_type`` in this task is marked as explored::

            if kit.admit("process_issue", complexity=issue.complexity):
                await process_issue(issue)

        Never raises; attributes that are not numbers are not gated.
        """
        def refuse(why: str) -> None:
            self.record(op_type, outcome="skipped", started_at=self._clock(), context=attrs,
                        error_type="Refused", error_message=why)

        return admit(self.config, op_type, attrs, self._random, refuse)

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
        raises.
        """
        return await self._writer.flush(timeout)

    async def aclose(self) -> None:
        """Flush, stop the writer and close the store. Idempotent."""
        if self._closed:
            return
        self._closed = True
        set_current(None, remove=self._recorder)
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
            self._loop_task = None
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        self._background.clear()
        try:
            await self._writer.aclose()
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
    config_path: str | Path = "learnkit.toml",
    *,
    clock: Clock | None = None,
    random: _random.Random | None = None,
    learning_loop: bool | None = None,
) -> AsyncIterator[Kit]:
    """Open learnkit: load the config, open the store, start the writer.

    The kit becomes *current*, so ``@tracked`` functions and ``track``
    blocks record into it. Leaving the block flushes everything and closes.

    Args:
        config_path: learnkit.toml.
        clock: zero-argument callable returning Unix seconds (UTC), for tests
            and simulations; default :func:`time.time`.
        random: the random generator exploration draws from (seed it for
            reproducible simulations).
        learning_loop: start the background learning loop; default
            ``learning.enabled`` from the config.

    Raises:
        ConfigError: the config file is missing or invalid.
        StoreError: the database cannot be opened.
    """
    kit = Kit(load_config(config_path), clock=clock, random=random, learning_loop=learning_loop)
    await kit._open()
    set_current(kit._recorder)
    try:
        yield kit
    finally:
        await kit.aclose()
