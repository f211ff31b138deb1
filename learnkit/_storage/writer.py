"""The batching writer: callers only enqueue; one background task writes.

The caller's path appends an :class:`~learnkit._model.Operation` to a deque
(thread-safe, no I/O, no formatting). The writer task wakes when a batch is
full or ``flush_interval`` has passed, and writes a batch per transaction.
Operations still running longer than ``running_after`` seconds, or at any
explicit flush, are stored as ``running`` so that a killed process leaves
rows to mark ``abandoned`` instead of a hole.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque

import attrs

from .._errors import StoreError
from .._model import Operation
from .protocol import Batch, Store

__all__ = ["WriterStats", "Writer"]

log = logging.getLogger("learnkit")


@attrs.frozen
class WriterStats:
    """A snapshot of what the writer has done; ``kit.stats``."""

    #: Operations handed to the writer since the kit opened.
    enqueued: int
    #: Rows inserted or updated.
    written: int
    #: Operations waiting to be written.
    queued: int
    #: Operations running in this process and not yet stored as running rows.
    running: int
    #: Operations that could not be kept (queue full for a caller that cannot wait).
    dropped: int
    #: Batches that failed and were retried.
    write_errors: int
    #: Context values stored as their repr because JSON could not hold them.
    context_coerced: int
    #: The last write error, if any.
    last_error: str | None
    #: Running operations of dead processes marked abandoned when this kit opened.
    abandoned_on_open: int


class Writer:
    """Owns the queue and the background task that empties it."""

    def __init__(
        self,
        store: Store,
        *,
        batch_size: int,
        flush_interval: float,
        max_queue: int,
        running_after: float = 1.0,
        heartbeat_every: float = 30.0,
    ) -> None:
        self.store = store
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.max_queue = max_queue
        self.running_after = running_after
        self.heartbeat_every = heartbeat_every
        self.queue: deque[Operation] = deque()
        #: Running operations not yet stored, oldest first (insertion order).
        self.live: dict[Operation, None] = {}
        self.enqueued = 0
        self.written = 0
        self.dropped = 0
        self.write_errors = 0
        self.last_error: str | None = None
        self.failing = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._room_threads = threading.Condition()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._retry: deque[Batch] = deque()
        self._closing = False
        self._last_heartbeat = 0.0
        self._last_drop_log = 0.0

    # -- called on the tracking path -----------------------------------------

    def submit(self, op: Operation, *, will_wait: bool = False) -> bool:
        """Queue a completed operation. Returns False only if it was dropped.

        Never raises. ``will_wait``: the caller awaits :meth:`wait_for_room`
        when :attr:`full` afterwards (async callers), so its record is always
        kept. A sync caller in another thread blocks until there is room; a
        sync caller on the event loop cannot, so it may overfill the queue to
        twice ``max_queue``, and only past that is a record dropped (counted,
        logged). The same hard cap bounds memory while the store is failing.
        """
        q = self.queue
        if len(q) >= self.max_queue and not (will_wait and not self.failing):
            if len(q) >= 2 * self.max_queue or not self._may_exceed():
                self._drop(1)
                return False
        q.append(op)
        self.enqueued += 1
        if len(q) >= self.batch_size:
            self.wake()
        return True

    def _may_exceed(self) -> bool:
        # Another thread can block until there is room; the loop thread cannot.
        if threading.get_ident() != self._loop_thread and self._loop is not None:
            self.wake()
            with self._room_threads:
                self._room_threads.wait_for(
                    lambda: len(self.queue) < self.max_queue or self._closing or self.failing,
                    timeout=30.0,
                )
        return len(self.queue) < 2 * self.max_queue

    def _drop(self, n: int) -> None:
        self.dropped += n
        now = time.monotonic()
        if now - self._last_drop_log > 5.0:
            self._last_drop_log = now
            log.error(
                "learnkit dropped %d record(s) in all: the write queue is full "
                "(storage.max_queue = %d) and the caller could not wait%s",
                self.dropped, self.max_queue,
                f"; last write error: {self.last_error}" if self.failing else "",
            )

    @property
    def full(self) -> bool:
        """True when async callers should wait for the writer (backpressure)."""
        return len(self.queue) >= self.max_queue and not self.failing

    async def wait_for_room(self) -> None:
        """Wait until the queue is below ``max_queue`` (or the writer is failing)."""
        while self.full and not self._closing:
            self._room.clear()
            self.wake()
            await self._room.wait()

    def wake(self) -> None:
        """Ask the writer task to drain now; safe from any thread."""
        if threading.get_ident() == self._loop_thread:
            self._wake.set()
        elif self._loop is not None:
            try:
                self._loop.call_soon_threadsafe(self._wake.set)
            except RuntimeError:  # loop closed
                pass

    # -- the background task ---------------------------------------------------

    def start(self) -> None:
        """Start the background task on the running loop."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._task = self._loop.create_task(self._run(), name="learnkit-writer")

    async def _run(self) -> None:
        backoff = 0.0
        while not self._closing:
            try:
                await asyncio.wait_for(self._wake.wait(), backoff or self.flush_interval)
            except TimeoutError:
                pass
            self._wake.clear()
            if self._closing:
                break
            ok = await self.drain(everything=False)
            backoff = 0.0 if ok else min(max(backoff * 2, 0.05), 5.0)

    async def drain(self, *, everything: bool) -> bool:
        """Write what is queued; True when every batch attempted succeeded.

        With ``everything``, also store every running operation as ``running``
        and keep going until the queue is empty; otherwise store only those
        running longer than ``running_after``, and at most a few batches.

        Batches are pipelined: while one commits in the store's write thread,
        the next is prepared here. A batch that fails keeps its rows (and
        ids) and is retried, in order, before anything newer.
        """
        async with self._lock:
            store = self.store
            while self._retry:
                try:
                    self.written += await store.commit(self._retry[0])
                except (StoreError, OSError) as exc:
                    self._failed(exc)
                    return False
                self._retry.popleft()
                self._recovered()
            pending: tuple[Batch, asyncio.Future[int]] | None = None
            ok = True
            rounds = 0
            while True:
                running = self._running_to_store(everything and rounds == 0)
                n = min(len(self.queue), self.batch_size)
                if n == 0 and not running:
                    break
                batch = [self.queue.popleft() for _ in range(n)]
                try:
                    await store.reserve_ids(2 * (n + len(running)))
                except (StoreError, OSError) as exc:
                    self.queue.extendleft(reversed(batch))
                    for op in running:
                        self.live[op] = None
                    self._failed(exc)
                    ok = False
                    break
                prepared = store.prepare(batch, running)
                if pending is not None and not await self._settle(pending):
                    self._retry.append(prepared)
                    pending = None
                    ok = False
                    break
                pending = (prepared, store.commit(prepared))
                rounds += 1
                if not everything and (rounds >= 8 or len(self.queue) < self.batch_size):
                    break
            if pending is not None and not await self._settle(pending):
                ok = False
            if ok:
                await self._maybe_heartbeat()
            self._signal_room()
            return ok

    async def _settle(self, pending: tuple[Batch, asyncio.Future[int]]) -> bool:
        prepared, fut = pending
        try:
            self.written += await fut
        except (StoreError, OSError) as exc:
            self._retry.append(prepared)
            self._failed(exc)
            return False
        self._recovered()
        return True

    def _recovered(self) -> None:
        if self.failing:
            self.failing = False
            log.warning("learnkit writer recovered; %d record(s) queued", self.pending)

    @property
    def pending(self) -> int:
        """Records not yet durable: queued, plus rows of batches awaiting a retry."""
        return len(self.queue) + sum(p.rows for p in self._retry)

    def _running_to_store(self, everything: bool) -> list[Operation]:
        live = self.live
        if not live:
            return []
        cutoff = time.perf_counter() - self.running_after
        out: list[Operation] = []
        for op in list(live):  # snapshot: other threads may add or remove
            if not everything and op.t0 > cutoff:
                break
            if not op.persisted:
                out.append(op)
            live.pop(op, None)
        return out

    def _failed(self, exc: BaseException) -> None:
        self.write_errors += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        if not self.failing:
            log.error(
                "learnkit could not write to %s (%s); %d record(s) kept and retried",
                self.store.location, self.last_error, self.pending,
            )
        self.failing = True
        self._signal_room()

    def _signal_room(self) -> None:
        if len(self.queue) < self.max_queue or self.failing:
            self._room.set()
            with self._room_threads:
                self._room_threads.notify_all()

    async def _maybe_heartbeat(self) -> None:
        now = time.monotonic()
        if now - self._last_heartbeat > self.heartbeat_every:
            self._last_heartbeat = now
            # A missed beat only delays cross-host recovery.
            with contextlib.suppress(StoreError, OSError):
                await self.store.heartbeat()

    async def flush(self, timeout: float | None = None) -> bool:
        """Make everything queued so far durable; True when it all was.

        Retries failed writes until ``timeout`` seconds pass (forever when
        None); never raises for a storage fault.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.02
        while True:
            if await self.drain(everything=True):
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def aclose(self, timeout: float = 10.0) -> None:
        """Write everything, stop the task, and report what could not be kept."""
        ok = await self.flush(timeout=timeout)
        self._closing = True
        self._wake.set()
        self._signal_room()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if not ok:
            lost = self.pending
            self._drop(lost)
            log.error(
                "learnkit closed with %d record(s) unwritten to %s (%s)",
                lost, self.store.location, self.last_error,
            )
            self.queue.clear()
            self._retry.clear()

    def stats(self) -> WriterStats:
        """A snapshot of the counters."""
        return WriterStats(
            enqueued=self.enqueued,
            written=self.written,
            queued=self.pending,
            running=len(self.live),
            dropped=self.dropped,
            write_errors=self.write_errors,
            context_coerced=self.store.context_coerced,
            last_error=self.last_error,
            abandoned_on_open=self.store.abandoned_on_open,
        )


