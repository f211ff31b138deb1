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
from collections.abc import Callable, Sequence
from pathlib import Path

import attrs

from .._errors import StoreCorruptError, StoreError, StoreUnavailableError
from .._model import Operation
from .protocol import Batch, Store
from .spill import Spill, lock_orphan, mark_done, orphans, read_orphan, remove

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
    #: Operations that could not be kept (queue full for a caller that cannot wait,
    #: unwritten at close, or a corrupt database); exact.
    dropped: int
    #: Batches that failed (and were retried or split), and writer faults caught.
    write_errors: int
    #: Operations whose context had keys or values cleaned (bounded, invalid Unicode
    #: replaced, or kept as repr) when recorded.
    context_coerced: int
    #: Records refused: invalid times, or a row the store would not take (isolated
    #: by splitting its batch); each logged.
    rejected: int
    #: The last write error, if any.
    last_error: str | None
    #: Running operations of dead processes marked abandoned when this kit opened.
    abandoned_on_open: int
    #: Records waiting in the spill file (past the memory bound; written back as
    #: the writer makes room).
    spilled: int = 0


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
        scrub: Callable[[Operation], None] | None = None,
        spill: Spill | None = None,
    ) -> None:
        self.store = store
        #: Where records past twice ``max_queue`` go instead of being dropped.
        self.spill = spill
        #: Called on every operation before it becomes rows (credential scrubbing).
        self.scrub = scrub
        #: Called with each batch of completed operations once it is turned into
        #: rows (ids assigned), on the loop thread; exceptions are logged, never raised.
        self.observers: list[Callable[[Sequence[Operation]], None]] = []
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
        self.rejected = 0
        self.write_errors = 0
        #: Set when the database turned out damaged: nothing more is attempted.
        self.broken: str | None = None
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
        self._drain_task: asyncio.Task[bool] | None = None
        #: True once closed: later records are dropped and counted.
        self.closed = False
        #: True in a child process forked while this writer ran.
        self.forked = False
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
        if self.broken is not None or self.closed or self.forked:
            self._refuse_late()
            return False
        if len(q) >= self.max_queue and not will_wait:
            if len(q) >= 2 * self.max_queue or not self._may_exceed():
                return self._spill(op)
        q.append(op)
        self.enqueued += 1
        if len(q) >= self.batch_size:
            self.wake()
        return True

    def call_soon(self, callback: Callable[[], None]) -> bool:
        """Run ``callback`` on the writer's event loop: at once when called there,
        else as soon as the loop gets to it. Safe from any thread, never blocks;
        ``callback`` may then :meth:`submit` without racing the writer.

        Returns False, counting one dropped record, when the writer has no loop
        (not started) or its loop is closed.
        """
        if threading.get_ident() == self._loop_thread:
            callback()
            return True
        loop = self._loop
        if loop is not None and not self.closed:
            try:
                loop.call_soon_threadsafe(callback)
                return True
            except RuntimeError:  # the loop is closed
                pass
        self._refuse_late()
        return False

    def _observe(self, ops: Sequence[Operation]) -> None:
        for observer in self.observers:
            try:
                observer(ops)
            except Exception as exc:  # an observer's bug must not stop the writer
                log.error("learnkit: an operation observer failed: %r", exc)

    def _may_exceed(self) -> bool:
        # Another thread can block until there is room; the loop thread cannot.
        if threading.get_ident() != self._loop_thread and self._loop is not None:
            self.wake()
            with self._room_threads:
                self._room_threads.wait_for(
                    lambda: len(self.queue) < self.max_queue or self._closing
                    or self.broken is not None,
                    timeout=30.0,
                )
        return len(self.queue) < 2 * self.max_queue

    def _spill(self, op: Operation) -> bool:
        """Past the memory bound: to the spill file (scrubbed first), else dropped."""
        if self._keep_on_disk(op):
            self.enqueued += 1
            if self.spill is not None and self.spill.spilled == 1:
                log.warning("learnkit: the write queue is full; records go to %s until the "
                            "writer catches up", self.spill.path)
            return True
        self._drop(1)
        return False

    def _keep_on_disk(self, op: Operation) -> bool:
        """Scrub (secrets never reach the disk) and append to the spill file."""
        spill = self.spill
        if spill is None:
            return False
        try:
            if self.scrub is not None:
                self.scrub(op)
            return spill.add(op)
        except Exception as exc:  # a bug here must not reach the caller
            self._fault(exc)
            return False

    def _drop(self, n: int) -> None:
        self.dropped += n
        now = time.monotonic()
        if now - self._last_drop_log > 5.0:
            self._last_drop_log = now
            self._log_drops("so far")

    def _log_drops(self, when: str) -> None:
        why = (
            f"the database is damaged ({self.broken})" if self.broken is not None
            else f"the write queue was full (storage.max_queue = {self.max_queue}) and the "
            "caller could not wait"
        )
        log.error(
            "learnkit dropped %d record(s) %s: %s%s", self.dropped, when, why,
            f"; last write error: {self.last_error}" if self.failing else "",
        )

    def _refuse_late(self) -> None:
        first = self.dropped == 0
        self.dropped += 1
        if self.forked and first:
            log.warning(
                "learnkit: records made in a forked child process are dropped (counted in "
                "kit.stats.dropped); open a kit in the child to track its work there"
            )
        elif self.closed and first:
            log.warning("learnkit: a record arrived after its kit closed; dropped and counted")
        elif not self.forked and not self.closed:
            self._drop(0)

    def reject(self, op: Operation | None, reason: str) -> None:
        """Count and log a record refused as invalid (never raises)."""
        self.rejected += 1
        log.error("learnkit refused a record (%d in all): %s", self.rejected, reason)
        if op is not None:
            self.live.pop(op, None)

    @property
    def full(self) -> bool:
        """True when async callers should wait for the writer (backpressure).

        Also while the store is failing: the queue bounds memory, and waiting
        callers are released when the store recovers, the kit closes, or the
        database turns out damaged.
        """
        return len(self.queue) >= self.max_queue and self.broken is None

    async def wait_for_room(self) -> None:
        """Wait until the queue is below ``max_queue`` (or the kit closes).

        A caller on another thread's event loop cannot wait on this loop's
        event (nothing would wake it): it polls instead, for at most 30 s, as a
        sync caller in another thread waits; its record is already queued.
        """
        if threading.get_ident() != self._loop_thread:
            deadline = time.monotonic() + 30.0
            while self.full and not self._closing and time.monotonic() < deadline:
                self.wake()
                await asyncio.sleep(0.005)
            return
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
            try:
                ok = await self.drain(everything=False)
            except Exception as exc:  # a bug must not end the writer: log, count, go on
                self._fault(exc)
                ok = False
            backoff = 0.0 if ok else min(max(backoff * 2, 0.05), 5.0)

    def _fault(self, exc: BaseException) -> None:
        self.write_errors += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        log.error("learnkit writer fault (it keeps running; %d record(s) kept): %s",
                  self.pending, self.last_error, exc_info=exc)

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
            if self.broken is not None:
                self._discard()
                return False
            if not await self._commit_retries():
                return False
            store = self.store
            pending: tuple[Batch, asyncio.Future[int]] | None = None
            ok = True
            rounds = 0
            while True:
                running = self._running_to_store(everything and rounds == 0)
                spill = self.spill
                if spill is not None and spill.count and len(self.queue) < self.batch_size:
                    self.queue.extend(spill.take(self.batch_size))
                n = min(len(self.queue), self.batch_size)
                if n == 0 and not running:
                    break
                batch = [self.queue.popleft() for _ in range(n)]
                try:
                    await store.reserve_ids(2 * (n + len(running)))
                    prepared = self._prepare(batch, running)
                except BaseException as exc:
                    self.queue.extendleft(reversed(batch))
                    for op in running:
                        self.live[op] = None
                    if not isinstance(exc, Exception):
                        raise
                    self._failed(exc)
                    ok = False
                    break
                if pending is not None and not await self._settle(pending):
                    self._retry.extend(prepared)
                    pending = None
                    ok = False
                    break
                for extra in prepared[:-1]:  # only after a fault in prepare
                    self._retry.append(extra)
                if prepared[:-1] and not await self._commit_retries():
                    self._retry.append(prepared[-1])
                    ok = False
                    break
                pending = (prepared[-1], store.commit(prepared[-1]))
                rounds += 1
                if not everything and (rounds >= 8 or len(self.queue) < self.batch_size):
                    break
            if pending is not None and not await self._settle(pending):
                ok = await self._commit_retries()
            if ok:
                if self.spill is not None and not self.pending:
                    self.spill.durable()
                await self._maybe_heartbeat()
            self._signal_room()
            return ok

    def _prepare(self, batch: list[Operation], running: list[Operation]) -> list[Batch]:
        """Prepare a batch; if that fails (a bug), each operation alone, refusing any
        that still fails, so that one bad record costs only itself."""
        try:
            if self.scrub is not None:
                for op in batch:
                    self.scrub(op)
                for op in running:
                    self.scrub(op)
            prepared = [self.store.prepare(batch, running)]
        except Exception as exc:
            self._fault(exc)
        else:
            if self.observers and batch:
                self._observe(batch)
            return prepared
        out: list[Batch] = []
        for op in [*batch, *running]:
            try:
                out.append(self.store.prepare([op], []) if op in batch
                           else self.store.prepare([], [op]))
                if self.observers and op in batch:
                    self._observe([op])
            except Exception as exc:
                self.reject(op, f"{op!r} could not be prepared: {type(exc).__name__}: {exc}")
        return out or [self.store.prepare([], [])]

    async def _commit_retries(self) -> bool:
        """Commit kept batches in order. A transient fault stops (False: retry later);
        any other fault splits the batch until the row at fault is alone, and
        refuses that row."""
        while self._retry:
            head = self._retry[0]
            try:
                self.written += await self.store.commit(head)
            except StoreUnavailableError as exc:
                self._failed(exc)
                return False
            except StoreCorruptError as exc:
                self._corrupt(exc)
                return False
            except Exception as exc:
                self.write_errors += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                self._retry.popleft()
                parts = self.store.split(head)
                if len(parts) == 1:
                    self.reject(None, f"a row {self.store.location} would not take: "
                                f"{self.last_error}")
                else:
                    self._retry.extendleft(reversed(parts))
                continue
            self._retry.popleft()
            self._recovered()
        return True

    def _corrupt(self, exc: BaseException) -> None:
        self.write_errors += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        if self.broken is None:
            self.broken = self.last_error
            log.error(
                "learnkit stops writing to %s: the database is damaged (%s). Records are "
                "counted as dropped; move the file away (or restore a backup) and restart.",
                self.store.location, self.last_error,
            )
        self._discard()

    def _discard(self) -> None:
        lost = self.pending
        self.queue.clear()
        self._retry.clear()
        if lost:
            self.dropped += lost
        self._signal_room()

    async def _settle(self, pending: tuple[Batch, asyncio.Future[int]]) -> bool:
        prepared, fut = pending
        try:
            self.written += await fut
        except Exception:
            # Kept, in order; _commit_retries tells a transient fault from a bad row.
            self._retry.append(prepared)
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
        if isinstance(exc, StoreCorruptError):
            self._corrupt(exc)
            return
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
        if len(self.queue) < self.max_queue or self.broken is not None or self._closing:
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
        None); never raises for a storage fault. The timeout holds even while a
        commit waits on another process's lock: the write then carries on in
        the background, and False is returned on time.
        """
        if self.forked:
            return False
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.02
        while True:
            task = self._drain_task
            if task is None or task.done():
                task = self._drain_task = asyncio.get_running_loop().create_task(
                    self._drain_all(), name="learnkit-flush"
                )
            if deadline is None:
                ok = await asyncio.shield(task)
            else:
                done, _ = await asyncio.wait({task}, timeout=max(0.0, deadline - time.monotonic()))
                if not done:
                    return False
                ok = task.result()
            if ok:
                return True
            if self.broken is not None:
                return False
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                await asyncio.sleep(min(delay, left))
            else:
                await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def _drain_all(self) -> bool:
        try:
            return await self.drain(everything=True)
        except Exception as exc:
            self._fault(exc)
            return False

    async def aclose(self, timeout: float = 10.0) -> None:
        """Write everything (running operations as ``running``), stop the task, and
        report exactly what could not be kept. Later records are dropped, counted."""
        if self.forked:
            self.closed = True
            return
        ok = await self.flush(timeout=timeout)
        self._closing = True
        self._wake.set()
        self._signal_room()
        if self._drain_task is not None:  # a write still in progress after the timeout
            (last,) = await asyncio.gather(self._drain_task, return_exceptions=True)
            ok = ok or last is True
            self._drain_task = None
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self.closed = True
        if not ok:
            # The store cannot take them now: the next open replays the spill file.
            keep = self.spill is not None and self.broken is None
            kept, lost, spilled = self._spill_retries(keep)
            while keep and self.queue:
                if id(self.queue[0]) in spilled:  # its running row's batch took it
                    self.queue.popleft()
                elif self._keep_on_disk(self.queue[0]):
                    self.queue.popleft()
                    kept += 1
                else:
                    break
            lost += len(self.queue)
            self.dropped += lost
            if lost or kept:
                log.error(
                    "learnkit closed with %d record(s) unwritten to %s (%s); %d of them "
                    "kept in the spill file", lost + kept, self.store.location,
                    self.last_error, kept,
                )
            self.queue.clear()
            self._retry.clear()
        if self.spill is not None:
            path = self.spill.path
            left = self.spill.close()
            if left:
                log.warning("learnkit: %d record(s) wait in %s; the next open of this store "
                            "writes them", left, path)
        if self.dropped:
            self._log_drops("in all")

    def _spill_retries(self, keep: bool) -> tuple[int, int, set[int]]:
        """At close: the records of the batches the store did not take, to the spill
        file (with ``keep``), oldest first. Returns the records kept there, the
        records lost, and the ``id()`` of every operation spilled.

        Their rows never landed, so every operation with an insert in one of
        these batches (running parents included) is marked not stored, keeping
        the id it was given: a record is spilled with that id, and so is a
        parent that ended since (once, though its completion is also queued).
        A completion whose running row was stored before cannot be replayed
        from the file (the next open marks that row abandoned): it is lost,
        counted.
        """
        sources = [s for batch in self._retry for s in batch.sources]
        for op, inserted in sources:
            if inserted:
                op.persisted = False
        kept = lost = 0
        done: set[int] = set()
        for op, _ in sources:
            if op.outcome == "running" or id(op) in done:
                continue
            done.add(id(op))
            if keep and not op.persisted and self._keep_on_disk(op):
                kept += 1
            else:
                lost += 1
        self._retry.clear()
        return kept, lost, done

    async def replay_orphans(self) -> int:
        """Write the spill files that processes gone before left for this store
        (see :mod:`learnkit._storage.spill`); returns how many records were written.

        A file is replayed by one kit at a time (its lock), in chunks, each made
        durable before the file's ``.done`` offset moves past it; a file is
        deleted once all of it is stored. Stops, leaving the rest for the next
        open, when the store does not take a chunk.
        """
        spill = self.spill
        if spill is None:
            return 0
        done = 0
        for path in orphans(spill.directory, spill.stem):
            with contextlib.ExitStack() as stack:
                if not lock_orphan(path, stack):
                    continue
                skipped = 0
                for ops, bad, offset in read_orphan(path, self.batch_size):
                    skipped += bad
                    ops = await self._not_stored(ops, path)
                    for op in ops:
                        self.submit(op, will_wait=True)
                        if self.full:
                            await self.wait_for_room()
                    if not await self.flush(timeout=10.0 + 2 * self.flush_interval):
                        log.error("learnkit: could not write spilled records from %s (%s); "
                                  "the next open tries again", path, self.last_error)
                        return done
                    mark_done(path, offset)
                    done += len(ops)
                remove(path)
                if skipped:
                    self.dropped += skipped
                    log.error("learnkit: %d record(s) in %s could not be written back (their "
                              "running rows were already marked abandoned)", skipped, path)
        if done:
            log.warning("learnkit: wrote %d record(s) spilled by an earlier process", done)
        return done

    async def _not_stored(self, ops: list[Operation], path: Path) -> list[Operation]:
        """Leave out spilled records whose reserved id already holds a row: their
        batch did commit after its process gave up on it (a lost reply)."""
        reserved = [op.db_id for op in ops if op.db_id is not None and not op.persisted]
        if not reserved:
            return ops
        stored = await self.store.stored_ids(reserved)
        if not stored:
            return ops
        log.warning("learnkit: %d record(s) in %s were already stored (their batch "
                    "committed after all); not written again", len(stored), path)
        return [op for op in ops if op.persisted or op.db_id not in stored]

    def after_fork(self) -> None:
        """In a child process: this writer's task and thread stayed in the parent.

        Records made here are dropped and counted, with one warning; closing
        does nothing (it must not wait for a thread that does not exist).
        """
        self.forked = True
        self.spill = None  # the parent's file (and its lock) stay the parent's
        self.queue.clear()
        self._retry.clear()
        self.live.clear()

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
            rejected=self.rejected,
            last_error=self.last_error,
            abandoned_on_open=self.store.abandoned_on_open,
            spilled=0 if self.spill is None else self.spill.count,
        )


