"""The SQLite store: sessions, id blocks, batched writes with rollups, queries.

It implements :class:`~learnkit._storage.protocol.Store`; every SQL
statement of the embedded backend lives here or in :mod:`.schema`.
``sqlite3`` errors are translated into :class:`~learnkit.StoreError` (or
:class:`~learnkit.StoreUnavailableError` when they may clear) before they
leave this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import socket
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
import attrs

from .._errors import StoreError, StoreUnavailableError
from .._model import HOUR, Operation
from .protocol import EXPORT_FIELDS, Batch, ExportRow, WindowStats
from .rollup import Aggregate, Encoder
from .schema import MIGRATIONS, SCHEMA_VERSION

T = TypeVar("T")

__all__ = ["HistoryReader", "Prepared", "SQLiteStore", "split_window"]



_COLUMNS = (
    "id, op_type, key, outcome, started_at, ended_at, duration, error_type,"
    " error_message, context, parent_id, session_id, admission"
)
_NCOLS = _COLUMNS.count(",") + 1
_INSERT = f"INSERT INTO operations ({_COLUMNS}) VALUES ({','.join('?' * _NCOLS)})"
_UPDATE = (
    "UPDATE operations SET outcome=?, ended_at=?, duration=?, error_type=?,"
    " error_message=?, context=?, admission=? WHERE id=?"
)
_ROLLUP = (
    "INSERT INTO rollup_hourly (op_type, hour, outcome, n, duration_sum)"
    " VALUES (?,?,?,?,?) ON CONFLICT (hour, op_type, outcome) DO UPDATE SET"
    " n = n + excluded.n, duration_sum = duration_sum + excluded.duration_sum"
)
_CONTEXT_ROLLUP = (
    "INSERT INTO context_rollup (hour, op_type, attr, value, outcome, explore, n)"
    " VALUES (?,?,?,?,?,?,?) ON CONFLICT (hour, op_type, attr, value, outcome, explore)"
    " DO UPDATE SET n = n + excluded.n"
)
_ERROR_ROLLUP = (
    "INSERT INTO error_rollup (hour, op_type, error_type, signature, n, first_seen, last_seen,"
    " example) VALUES (?,?,?,?,?,?,?,?) ON CONFLICT (hour, op_type, error_type, signature)"
    " DO UPDATE SET n = n + excluded.n, first_seen = min(first_seen, excluded.first_seen),"
    " last_seen = max(last_seen, excluded.last_seen)"
)
_ERROR_CONTEXT_ROLLUP = (
    "INSERT INTO error_context_rollup (hour, op_type, error_type, signature, attr, value, n)"
    " VALUES (?,?,?,?,?,?,?) ON CONFLICT (hour, op_type, error_type, signature, attr, value)"
    " DO UPDATE SET n = n + excluded.n"
)

def split_window(
    start: float, end: float
) -> tuple[int, int, list[tuple[float, float]]]:
    """``[start, end)`` as whole hours ``[h0, h1)`` (for rollups) and the non-empty
    partial-hour edges (for rows). With no whole hour, the window is one edge."""
    h0, h1 = math.ceil(start / HOUR), math.floor(end / HOUR)
    edges = [(start, end)] if h0 >= h1 else [(start, h0 * HOUR), (h1 * HOUR, end)]
    return h0, h1, [(a, b) for a, b in edges if a < b]


# sqlite3 error codes of faults that clear by themselves: another process's
# lock, a full disk, an I/O hiccup, a file that cannot be opened yet.
_TRANSIENT_CODES = frozenset({
    5,    # SQLITE_BUSY
    6,    # SQLITE_LOCKED
    10,   # SQLITE_IOERR
    13,   # SQLITE_FULL
    14,   # SQLITE_CANTOPEN
    15,   # SQLITE_PROTOCOL
})


def translate(exc: sqlite3.Error, where: Path) -> StoreError:
    """The :class:`StoreError` for a ``sqlite3`` error (unavailable when it may clear)."""
    code = getattr(exc, "sqlite_errorcode", None)
    primary = None if code is None else code & 0xFF
    transient = primary in _TRANSIENT_CODES or (
        primary is None and isinstance(exc, sqlite3.OperationalError)
        and any(w in str(exc) for w in ("locked", "busy", "disk", "unable to open"))
    )
    cls = StoreUnavailableError if transient else StoreError
    err = cls(f"{where}: {exc}")
    err.__cause__ = exc
    return err


def _process_start(pid: int) -> str | None:
    """The kernel's start time of ``pid``, to tell a reused pid from the original."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    if fields and fields[0] in ("Z", "X"):
        return "dead"
    return fields[19] if len(fields) > 19 else None


def _pid_alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    now = _process_start(pid)
    if now == "dead":
        return False
    return start is None or now is None or now == start


@attrs.define
class Prepared:
    """One batch turned into rows, ready to commit (ids already assigned)."""

    inserts: list[tuple[Any, ...]]
    updates: list[tuple[Any, ...]]
    agg: Aggregate
    coerced: int

    @property
    def rows(self) -> int:
        """Rows this batch inserts or updates."""
        return len(self.inserts) + len(self.updates)

    def insert_chunks(self, per_statement: int) -> Iterator[tuple[int, list[Any]]]:
        """The inserts as (rows, flat parameters) for multi-row INSERT statements."""
        rows = self.inserts
        for k in range(0, len(rows), per_statement):
            chunk = rows[k : k + per_statement]
            yield len(chunk), [x for row in chunk for x in row]


class SQLiteStore:
    """The embedded store: one SQLite file in WAL mode, shared by processes.

    Writes run in one dedicated thread with its own connection, so that a
    batch commits while the event loop prepares the next one; reads use an
    aiosqlite connection. Ids come from blocks reserved atomically in the
    ``meta`` table: each process appends increasing ids within its block
    and no two processes ever share one.
    """

    ID_BLOCK = 100_000

    def __init__(self, path: Path, *, busy_timeout: float = 5.0, stale_after: float = 600.0):
        self.path = path
        self.location = str(path)
        self.encoder = Encoder()
        self.busy_timeout = busy_timeout
        self.stale_after = stale_after
        self.session_id = 0
        self.context_coerced = 0
        self.abandoned_on_open = 0
        self._conn: sqlite3.Connection | None = None
        self._read: aiosqlite.Connection | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._next_id = 0
        self._id_limit = 0  # exclusive
        self._rows_per_insert = 500
        self._insert_cache: dict[int, str] = {}

    # -- the write thread --------------------------------------------------

    async def _in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            raise StoreError(f"{self.path}: the store is closed")
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, self._guarded, fn, *args
        )

    def _guarded(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn`` with ``sqlite3`` errors translated (in the write thread)."""
        try:
            return fn(*args)
        except sqlite3.Error as exc:
            raise translate(exc, self.path) from exc

    def _w(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(f"{self.path}: the store is closed")
        return self._conn

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        conn = self._w()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            raise
        conn.execute("COMMIT")

    # -- lifecycle ---------------------------------------------------------

    async def open(self) -> None:
        """Create or migrate the schema, register this process, recover the dead.

        Raises:
            StoreError: the file is not a database, its directory is missing,
                or it was written by a newer learnkit.
        """
        if not self.path.parent.is_dir():
            raise StoreError(
                f"{self.path}: directory {self.path.parent} does not exist; "
                "create it or change [storage] path"
            )
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="learnkit-writer")
        try:
            await self._in_thread(self._open_sync)
            self._read = await aiosqlite.connect(
                self.path, isolation_level=None, timeout=self.busy_timeout
            )
            await self._read.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            await self._read.execute("PRAGMA query_only = 1")
        except sqlite3.DatabaseError as exc:
            await self.aclose()
            raise StoreError(f"{self.path}: {exc}; is it a learnkit database?") from None
        except StoreError as exc:
            await self.aclose()
            if isinstance(exc, StoreUnavailableError) or not isinstance(
                exc.__cause__, sqlite3.DatabaseError
            ):
                raise
            raise StoreError(f"{exc}; is it a learnkit database?") from None
        except BaseException:
            await self.aclose()
            raise

    def _open_sync(self) -> None:
        conn = sqlite3.connect(
            self.path, isolation_level=None, timeout=self.busy_timeout,
            check_same_thread=False,
        )
        self._conn = conn
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal":
            raise StoreError(f"{self.path}: cannot use WAL journal mode (got {mode})")
        conn.execute("PRAGMA synchronous = NORMAL")
        limit = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        self._rows_per_insert = max(1, min(2000, limit // _NCOLS))
        with self._transaction():
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path}: schema version {version} was written by a newer "
                    f"learnkit (this one knows up to {SCHEMA_VERSION}); upgrade learnkit"
                )
            for i in range(version, SCHEMA_VERSION):
                for stmt in filter(str.strip, MIGRATIONS[i].split(";")):
                    conn.execute(stmt)
            if version != SCHEMA_VERSION:
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('next_id',"
                " (SELECT coalesce(max(id), 0) + 1 FROM operations))"
            )
        self._register_session()

    def _register_session(self) -> None:
        now = time.time()
        host, pid = socket.gethostname(), os.getpid()
        with self._transaction() as conn:
            cur = conn.execute(
                "INSERT INTO sessions (host, pid, pid_start, started_at, heartbeat_at, state)"
                " VALUES (?,?,?,?,?, 'open')",
                (host, pid, _process_start(pid), now, now),
            )
            self.session_id = cur.lastrowid or 0
            others = conn.execute(
                "SELECT id, host, pid, pid_start, heartbeat_at FROM sessions"
                " WHERE state = 'open' AND id != ?",
                (self.session_id,),
            ).fetchall()
            dead = [
                sid
                for sid, h, p, ps, hb in others
                if (h == host and not _pid_alive(p, ps))
                or (h != host and now - hb > self.stale_after)
            ]
            if dead:
                self.abandoned_on_open = self._abandon(conn, dead, now)

    def _abandon(self, conn: sqlite3.Connection, sessions: list[int], now: float) -> int:
        marks = ",".join("?" * len(sessions))
        where = f"ended_at IS NULL AND outcome = 'running' AND session_id IN ({marks})"
        conn.execute(
            "INSERT INTO rollup_hourly (op_type, hour, outcome, n, duration_sum)"
            f" SELECT op_type, CAST(started_at / {HOUR} AS INTEGER), 'abandoned', count(*), 0"
            f" FROM operations WHERE {where} GROUP BY 1, 2 ON CONFLICT (hour, op_type, outcome)"
            " DO UPDATE SET n = n + excluded.n",
            sessions,
        )
        cur = conn.execute(f"UPDATE operations SET outcome = 'abandoned' WHERE {where}", sessions)
        conn.execute(
            f"UPDATE sessions SET state = 'crashed', ended_at = ? WHERE id IN ({marks})",
            [now, *sessions],
        )
        return cur.rowcount

    def _reader(self) -> aiosqlite.Connection:
        if self._read is None:
            raise StoreError(f"{self.path}: the store is closed")
        return self._read

    def _close_sync(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self.session_id:
            # A session left open is recovered by the next open.
            with contextlib.suppress(sqlite3.Error):
                conn.execute(
                    "UPDATE sessions SET state = 'closed', ended_at = ? WHERE id = ?",
                    (time.time(), self.session_id),
                )
        conn.close()

    async def aclose(self) -> None:
        """Mark this session closed and close both connections."""
        if self._read is not None:
            try:
                await self._read.close()
            except (sqlite3.Error, ValueError):
                pass
            self._read = None
        if self._executor is not None:
            try:
                await self._in_thread(self._close_sync)
            except sqlite3.Error:
                pass
            self._executor.shutdown(wait=True)
            self._executor = None

    # -- writing -----------------------------------------------------------

    async def heartbeat(self) -> None:
        """Tell other processes this session is alive (for cross-host recovery)."""

        def beat() -> None:
            self._w().execute(
                "UPDATE sessions SET heartbeat_at = ? WHERE id = ?",
                (time.time(), self.session_id),
            )

        await self._in_thread(beat)

    async def reserve_ids(self, needed: int) -> None:
        """Make sure at least ``needed`` ids are reserved for this process."""
        if self._id_limit - self._next_id >= needed:
            return

        def reserve() -> tuple[int, int]:
            block = max(self.ID_BLOCK, needed)
            with self._transaction() as conn:
                first = int(conn.execute(
                    "SELECT value FROM meta WHERE key = 'next_id'").fetchone()[0])
                conn.execute(
                    "UPDATE meta SET value = ? WHERE key = 'next_id'", (str(first + block),))
            return first, first + block

        self._next_id, self._id_limit = await self._in_thread(reserve)

    def prepare(
        self, completed: Sequence[Operation], running: Sequence[Operation]
    ) -> Prepared:
        """Turn a batch into rows and rollup counts (no I/O; the loop thread).

        ``completed`` operations are inserted, or update their ``running``
        row; ``running`` ones become ``running`` rows unless already stored.
        Parents get an id (and a ``running`` row if not stored yet) before
        their children. Call :meth:`reserve_ids` with
        ``2 * (len(completed) + len(running))`` first. Batches must then be
        committed in the order they were prepared.
        """
        ending = set(completed)
        extra_running: list[Operation] = []

        def id_of(op: Operation) -> int:
            i = op.db_id
            if i is None:
                i = op.db_id = self._next_id
                self._next_id += 1
                if op not in ending and not op.persisted:
                    extra_running.append(op)
            return i

        inserts: list[tuple[Any, ...]] = []
        updates: list[tuple[Any, ...]] = []
        agg = self.encoder.aggregate()
        add = agg.add
        encode_context = self.encoder.encode_context
        sid = self.session_id
        coerced = 0
        for op in completed:
            ctx, bad, items = encode_context(op.op_type, op.context)
            coerced += bad
            if op.persisted:
                updates.append(
                    (op.outcome, op.ended_at, op.duration, op.error_type,
                     op.error_message, ctx, op.admission, op.db_id)
                )
            else:
                parent = op.parent
                inserts.append(
                    (id_of(op), op.op_type, op.key, op.outcome, op.started_at,
                     op.ended_at, op.duration, op.error_type, op.error_message, ctx,
                     None if parent is None else id_of(parent), sid, op.admission)
                )
                op.persisted = True
            ended = op.ended_at if op.ended_at is not None else op.started_at
            add(op.op_type, op.outcome, ended, op.duration, items, op.error_type,
                op.error_message, op.admission is not None)
        for op in running:
            if not op.persisted and op not in ending and op.db_id is None:
                id_of(op)
        i = 0
        while i < len(extra_running):  # parents of running ops need rows too
            op = extra_running[i]
            ctx, bad, _ = encode_context(op.op_type, op.context)
            coerced += bad
            parent = op.parent
            inserts.append(
                (op.db_id, op.op_type, op.key, "running", op.started_at, None, None,
                 None, None, ctx, None if parent is None else id_of(parent), sid,
                 op.admission)
            )
            op.persisted = True
            i += 1
        return Prepared(inserts, updates, agg, coerced)

    def _insert_sql(self, rows: int) -> str:
        sql = self._insert_cache.get(rows)
        if sql is None:
            one = "(" + ",".join("?" * _NCOLS) + ")"
            sql = self._insert_cache[rows] = (
                f"INSERT INTO operations ({_COLUMNS}) VALUES " + ",".join([one] * rows)
            )
        return sql

    def _commit_sync(self, p: Prepared) -> int:
        with self._transaction() as conn:
            # One multi-row INSERT binds all parameters, then runs as a single
            # step without the GIL; executemany would take the GIL back for
            # every row and stall against the event loop preparing the next
            # batch.
            for rows, params in p.insert_chunks(self._rows_per_insert):
                conn.execute(self._insert_sql(rows), params)
            if p.updates:
                conn.executemany(_UPDATE, p.updates)
            agg = p.agg
            if agg.outcomes:
                conn.executemany(
                    _ROLLUP, [(t, h, o, n, d) for (t, h, o), (n, d) in agg.outcomes.items()]
                )
            if agg.context:
                conn.executemany(_CONTEXT_ROLLUP, [(*k, n) for k, n in agg.context.items()])
            if agg.errors:
                conn.executemany(_ERROR_ROLLUP, [(*k, *v) for k, v in agg.errors.items()])
            if agg.error_context:
                conn.executemany(
                    _ERROR_CONTEXT_ROLLUP, [(*k, n) for k, n in agg.error_context.items()]
                )
        return p.rows

    def commit(self, batch: Batch) -> asyncio.Future[int]:
        """Start committing a prepared batch in the write thread; one transaction."""
        if not isinstance(batch, Prepared):
            raise TypeError(f"not a batch this store prepared: {batch!r}")
        p = batch
        if self._executor is None:
            raise StoreError(f"{self.path}: the store is closed")
        fut = asyncio.get_running_loop().run_in_executor(
            self._executor, self._guarded, self._commit_sync, p
        )
        self.context_coerced += p.coerced
        p.coerced = 0
        return fut

    async def write_batch(
        self, completed: Sequence[Operation], running: Sequence[Operation] = ()
    ) -> int:
        """Prepare and commit one batch; returns the rows touched."""
        await self.reserve_ids(2 * (len(completed) + len(running)))
        return await self.commit(self.prepare(completed, running))

    # -- reading -----------------------------------------------------------

    async def fetchall(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        """Run a read-only query on the reading connection."""
        try:
            async with self._reader().execute(sql, args) as cur:
                return list(await cur.fetchall())
        except sqlite3.Error as exc:
            raise translate(exc, self.path) from exc

    async def has_operations(self) -> bool:
        """True when any operation is stored."""
        return bool(await self.fetchall("SELECT 1 FROM operations LIMIT 1"))

    async def export_rows(
        self, *, since: float | None = None, chunk: int = 10_000
    ) -> AsyncIterator[list[ExportRow]]:
        """Ended operations (since ``since``) in end-time order, in chunks."""
        cols = ", ".join(EXPORT_FIELDS)
        last: tuple[float, int] = (-math.inf if since is None else since, -1)
        while True:
            rows = await self.fetchall(
                f"SELECT {cols}, id FROM operations WHERE ended_at IS NOT NULL"
                " AND (ended_at > ? OR (ended_at = ? AND id > ?)) AND ended_at >= ?"
                " ORDER BY ended_at, id LIMIT ?",
                [last[0], last[0], last[1], -math.inf if since is None else since, chunk],
            )
            if not rows:
                return
            last = (rows[-1][3], rows[-1][-1])
            yield [r[:-1] for r in rows]

    async def outcome_counts(
        self, start: float, end: float, *, op_type: str | None = None, by_type: bool = False
    ) -> dict[tuple[str, str], int]:
        """Operations per (op_type or "", outcome) that ended in ``[start, end)``.

        Whole hours come from the hourly rollup; only the partial hours at
        either edge read rows, through the ``ended_at`` index. Abandoned
        operations count at their start time (they never ended).
        """
        counts: dict[tuple[str, str], int] = {}

        def add(rows: Iterable[Any]) -> None:
            for t, outcome, n in rows:
                k = (t if by_type else "", outcome)
                counts[k] = counts.get(k, 0) + n

        type_sql, type_args = ("AND op_type = ?", [op_type]) if op_type else ("", [])
        h0, h1, edges = split_window(start, end)
        if h0 < h1:
            add(await self.fetchall(
                "SELECT op_type, outcome, sum(n) FROM rollup_hourly"
                f" WHERE hour >= ? AND hour < ? {type_sql} GROUP BY 1, 2",
                [h0, h1, *type_args],
            ))
        for a, b in edges:
            add(await self.fetchall(
                "SELECT op_type, outcome, count(*) FROM operations"
                f" WHERE ended_at >= ? AND ended_at < ? {type_sql} GROUP BY 1, 2",
                [a, b, *type_args],
            ))
            add(await self.fetchall(
                "SELECT op_type, outcome, count(*) FROM operations"
                " WHERE ended_at IS NULL AND outcome = 'abandoned'"
                f" AND started_at >= ? AND started_at < ? {type_sql} GROUP BY 1, 2",
                [a, b, *type_args],
            ))
        return counts

    async def durations(
        self, start: float, end: float, *, op_type: str | None = None
    ) -> list[float]:
        """Sorted durations of operations that ended in ``[start, end)``."""
        type_sql, type_args = ("AND op_type = ?", [op_type]) if op_type else ("", [])
        rows = await self.fetchall(
            "SELECT duration FROM operations WHERE ended_at >= ? AND ended_at < ?"
            f" AND duration IS NOT NULL {type_sql} ORDER BY duration",
            [start, end, *type_args],
        )
        return [r[0] for r in rows]

    async def window_stats(
        self, start: float, end: float, *, context: bool = True
    ) -> WindowStats:
        """Everything analysis needs about ``[start, end)``, from rollups.

        Whole hours come from the rollup tables, aggregated in SQL; the
        partial hours at either edge are read as rows and aggregated the way
        the writer does, so the result is exact at the boundaries. Without
        ``context`` only outcomes and error counts are read.
        """
        ws = WindowStats(start, end)
        h0, h1, _ = split_window(start, end)
        if h0 < h1:
            args = [h0, h1]
            for t, h, o, n in await self.fetchall(
                "SELECT op_type, hour, outcome, n FROM rollup_hourly"
                " WHERE hour >= ? AND hour < ?", args,
            ):
                ws.outcomes[(t, h, o)] = n
            for t, a, v, o, x, n in (await self.fetchall(
                "SELECT op_type, attr, value, outcome, explore, sum(n) FROM context_rollup"
                " WHERE hour >= ? AND hour < ? GROUP BY 1, 2, 3, 4, 5", args,
            ) if context else []):
                ws.context[(t, a, v, o, x)] = n
            for t, et, sig, n, first, last, example in await self.fetchall(
                "SELECT op_type, error_type, signature, sum(n), min(first_seen),"
                " max(last_seen), example FROM error_rollup"
                " WHERE hour >= ? AND hour < ? GROUP BY 1, 2, 3", args,
            ):
                ws.errors[(t, et, sig)] = [n, first, last, example]
            for t, et, sig, a, v, n in (await self.fetchall(
                "SELECT op_type, error_type, signature, attr, value, sum(n)"
                " FROM error_context_rollup WHERE hour >= ? AND hour < ?"
                " GROUP BY 1, 2, 3, 4, 5", args,
            ) if context else []):
                ws.error_context[(t, et, sig, a, v)] = n
        edges = await self._edges(start, end)
        if not context:
            edges.drop_context()
        ws.merge(edges)
        return ws

    async def _edges(self, start: float, end: float) -> Aggregate:
        """The partial hours at either edge of a window, aggregated from rows."""
        *_, edges = split_window(start, end)
        agg = self.encoder.aggregate()
        context_items = self.encoder.context_items
        for a, b in edges:
            for t, o, ended, dur, ctx, et, msg, adm in await self.fetchall(
                "SELECT op_type, outcome, ended_at, duration, context, error_type,"
                " error_message, admission FROM operations"
                " WHERE ended_at >= ? AND ended_at < ?",
                [a, b],
            ):
                items = context_items(t, json.loads(ctx)) if ctx else ()
                agg.add(t, o, ended, dur, items, et, msg, adm is not None)
            for t, started in await self.fetchall(
                "SELECT op_type, started_at FROM operations WHERE ended_at IS NULL"
                " AND outcome = 'abandoned' AND started_at >= ? AND started_at < ?", [a, b],
            ):
                agg.add(t, "abandoned", started, None, (), None, None)
        return agg

    # -- thresholds and bookkeeping -------------------------------------------

    async def record_change(self, row: dict[str, Any]) -> int:
        """Insert a threshold change; returns its id."""

        def insert() -> int:
            with self._transaction() as conn:
                cols = ", ".join(row)
                marks = ", ".join("?" * len(row))
                cur = conn.execute(
                    f"INSERT INTO threshold_changes ({cols}) VALUES ({marks})", list(row.values())
                )
                return cur.lastrowid or 0

        return await self._in_thread(insert)

    async def update_change(self, change_id: int, **fields: Any) -> None:
        """Set fields (status, verdict, verdict_at) of a recorded change."""

        def update() -> None:
            sets = ", ".join(f"{k} = ?" for k in fields)
            with self._transaction() as conn:
                conn.execute(
                    f"UPDATE threshold_changes SET {sets} WHERE id = ?",
                    [*fields.values(), change_id],
                )

        await self._in_thread(update)

    async def changes(self, name: str | None = None) -> list[dict[str, Any]]:
        """Recorded threshold changes, oldest first."""
        where, args = ("WHERE name = ?", [name]) if name else ("", [])
        try:
            async with self._reader().execute(
                f"SELECT * FROM threshold_changes {where} ORDER BY at, id", args
            ) as cur:
                cols = [d[0] for d in cur.description]
                rows = await cur.fetchall()
        except sqlite3.Error as exc:
            raise translate(exc, self.path) from exc
        return [dict(zip(cols, r, strict=True)) for r in rows]

    async def meta_get(self, key: str) -> str | None:
        """A value of the meta table."""
        rows = await self.fetchall("SELECT value FROM meta WHERE key = ?", [key])
        return rows[0][0] if rows else None

    async def meta_swap(self, key: str, expected: str | None, new: str) -> bool:
        """Set ``key`` to ``new`` only if it still holds ``expected``; True if it did.

        Several processes use this to agree on who runs the next analysis.
        """

        def swap() -> bool:
            with self._transaction() as conn:
                row = conn.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
                current = None if row is None else row[0]
                if current != expected:
                    return False
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key)"
                    " DO UPDATE SET value = excluded.value", [key, new],
                )
                return True

        return await self._in_thread(swap)

    async def context_counts(
        self, start: float, end: float, attr: str, op_type: str | None = None
    ) -> dict[tuple[str, str, int], int]:
        """(value JSON, outcome, explored) -> operations with ``attr``, ended in [start, end)."""
        out: dict[tuple[str, str, int], int] = {}
        h0, h1, _ = split_window(start, end)
        if h0 < h1:
            type_sql, type_args = ("AND op_type = ?", [op_type]) if op_type else ("", [])
            for v, o, x, n in await self.fetchall(
                "SELECT value, outcome, explore, sum(n) FROM context_rollup"
                f" WHERE hour >= ? AND hour < ? AND attr = ? {type_sql} GROUP BY 1, 2, 3",
                [h0, h1, attr, *type_args],
            ):
                out[(v, o, x)] = n
        for (_, t, a, v, o, x), n in (await self._edges(start, end)).context.items():
            if a == attr and (op_type is None or t == op_type):
                out[(v, o, x)] = out.get((v, o, x), 0) + n
        return out

    async def op_types(self) -> list[str]:
        """Every operation type ever recorded (from the rollup, not the rows)."""
        return [r[0] for r in await self.fetchall(
            "SELECT DISTINCT op_type FROM rollup_hourly ORDER BY 1"
        )]

    # -- retention ---------------------------------------------------------

    async def prune(self, before: float, *, chunk: int = 20_000) -> int:
        """Delete rows that ended (or, abandoned, started) before ``before``, rounded
        down to a whole hour, a chunk per transaction; rollups and history stay."""
        cut = math.floor(before / HOUR) * HOUR

        def delete(sql: str, args: Sequence[Any]) -> int:
            with self._transaction() as conn:
                return conn.execute(sql, args).rowcount

        total = 0
        while True:
            n = await self._in_thread(
                delete, "DELETE FROM operations WHERE id IN (SELECT id FROM operations"
                " WHERE ended_at < ? LIMIT ?)", (cut, chunk),
            )
            total += n
            if n < chunk:
                break
        total += await self._in_thread(
            delete, "DELETE FROM operations WHERE ended_at IS NULL AND outcome = 'abandoned'"
            " AND started_at < ?", (cut,),
        )
        await self._in_thread(
            delete, "DELETE FROM sessions WHERE state != 'open' AND ended_at < ?", (cut,)
        )
        return total


class HistoryReader:
    """A whole SQLite store read back raw, read-only (to migrate it elsewhere).

    Open the store with :class:`SQLiteStore` first so that its schema is current.
    """

    def __init__(self, path: Path) -> None:
        self._conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)

    def close(self) -> None:
        """Close the file."""
        self._conn.close()

    def count(self) -> int:
        """Operation rows."""
        return int(self._conn.execute("SELECT count(*) FROM operations").fetchone()[0])

    def ids(self) -> Iterator[int]:
        """Every operation id, in order."""
        return (r[0] for r in self._conn.execute("SELECT id FROM operations ORDER BY id"))

    def operations(self, columns: Sequence[str], chunk: int) -> Iterator[list[tuple[Any, ...]]]:
        """Every operation row (these columns) in id order, in chunks."""
        cur = self._conn.execute(f"SELECT {', '.join(columns)} FROM operations ORDER BY id")
        while batch := cur.fetchmany(chunk):
            yield batch

    def rollups(self) -> tuple[list[Any], list[Any], list[Any], list[Any]]:
        """The four rollups' rows: hourly (op_type, hour, outcome, n, duration_sum),
        context, error and error-context (hour first, count last)."""
        q = self._conn.execute
        return (
            q("SELECT op_type, hour, outcome, n, duration_sum FROM rollup_hourly").fetchall(),
            q("SELECT hour, op_type, attr, value, outcome, explore, n FROM context_rollup")
            .fetchall(),
            q("SELECT hour, op_type, error_type, signature, n, first_seen, last_seen, example"
              " FROM error_rollup").fetchall(),
            q("SELECT hour, op_type, error_type, signature, attr, value, n"
              " FROM error_context_rollup").fetchall(),
        )

    def changes(self, columns: Sequence[str]) -> list[tuple[Any, ...]]:
        """Threshold changes (these columns), oldest first."""
        return self._conn.execute(
            f"SELECT {', '.join(columns)} FROM threshold_changes ORDER BY at, id").fetchall()

    def meta(self, key: str) -> str | None:
        """A value of the meta table."""
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
        return None if row is None else str(row[0])
