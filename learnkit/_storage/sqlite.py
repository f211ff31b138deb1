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
import threading
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from itertools import islice, repeat
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
import attrs

from .._aio import run_shielded
from .._errors import StoreCorruptError, StoreError, StoreUnavailableError
from .._model import HOUR, Operation
from .protocol import EXPORT_FIELDS, Batch, ExportRow, ImportRecord, ImportResult, WindowStats
from .rollup import Aggregate, Encoder
from .schema import EXCLUSIVE, MIGRATIONS, SCHEMA_VERSION
from .series import SERIES_OUTCOMES, SeriesPlan, collect, plan_series, split_window

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
    " error_message=?, context=?, admission=? WHERE id=? AND op_type=?"
)
_ROLLUP = (
    "INSERT INTO rollup_hourly (op_type, hour, outcome, n, duration_sum)"
    " VALUES (?,?,?,?,?) ON CONFLICT (hour, op_type, outcome) DO UPDATE SET"
    " n = n + excluded.n, duration_sum = duration_sum + excluded.duration_sum"
)
# ON CONFLICT DO NOTHING, not INSERT OR IGNORE: only an existing key is skipped;
# a NULL still raises (and the writer isolates the row) instead of vanishing.
_CONTEXT_KEY = (
    "INSERT INTO context_keys (op_type, attr, value) VALUES (?,?,?) ON CONFLICT DO NOTHING"
)
_ERROR_KEY = (
    "INSERT INTO error_keys (op_type, error_type, signature) VALUES (?,?,?)"
    " ON CONFLICT DO NOTHING"
)
_CONTEXT_ROLLUP = (
    "INSERT INTO context_rollup_hourly (hour, key, outcome, explore, n)"
    " SELECT ?, id, ?, ?, ? FROM context_keys WHERE op_type = ? AND attr = ? AND value = ?"
    " ON CONFLICT (hour, key, outcome, explore) DO UPDATE SET n = n + excluded.n"
)
_CONTEXT_DAILY = (
    "INSERT INTO context_rollup_daily (day, key, outcome, explore, n)"
    " SELECT ?, id, ?, ?, ? FROM context_keys WHERE op_type = ? AND attr = ? AND value = ?"
    " ON CONFLICT (day, key, outcome, explore) DO UPDATE SET n = n + excluded.n"
)
_ERROR_ROLLUP = (
    "INSERT INTO error_rollup (hour, op_type, error_type, signature, n, first_seen, last_seen,"
    " example) VALUES (?,?,?,?,?,?,?,?) ON CONFLICT (hour, op_type, error_type, signature)"
    " DO UPDATE SET n = n + excluded.n, first_seen = min(first_seen, excluded.first_seen),"
    " last_seen = max(last_seen, excluded.last_seen)"
)
_ERROR_CONTEXT_ROLLUP = (
    "INSERT INTO error_context_rollup_hourly (hour, error_key, key, n)"
    " SELECT ?, e.id, k.id, ? FROM error_keys e, context_keys k"
    " WHERE e.op_type = ? AND e.error_type = ? AND e.signature = ?"
    " AND k.op_type = ? AND k.attr = ? AND k.value = ?"
    " ON CONFLICT (hour, error_key, key) DO UPDATE SET n = n + excluded.n"
)


def _context_parts(h0: int, h1: int, where: str = "") -> tuple[str, list[Any]]:
    """The context rollup rows (key, outcome, explore, n) of the whole hours
    ``[h0, h1)``: whole UTC days from the daily table, the hours at either end
    from the hourly one; ``where`` adds a condition on ``key``. UNION ALL parts."""
    d0, d1 = -(-h0 // 24), h1 // 24
    cond = f" AND {where}" if where else ""
    if d0 >= d1:
        return ("SELECT key, outcome, explore, n FROM context_rollup_hourly"
                f" WHERE hour >= ? AND hour < ?{cond}", [h0, h1])
    parts = ["SELECT key, outcome, explore, n FROM context_rollup_daily"
             f" WHERE day >= ? AND day < ?{cond}"]
    args: list[Any] = [d0, d1]
    for a, b in ((h0, d0 * 24), (d1 * 24, h1)):
        if a < b:
            parts.append("SELECT key, outcome, explore, n FROM context_rollup_hourly"
                         f" WHERE hour >= ? AND hour < ?{cond}")
            args += [a, b]
    return " UNION ALL ".join(parts), args


def _write_rollups(conn: sqlite3.Connection, agg: Aggregate) -> None:
    """Add an aggregate's counts to the four rollups (inside a transaction).

    Context and error-context counts are keyed by integer ids (``context_keys``,
    ``error_keys``): the keys are added first if new, then each count finds its
    ids through the keys' unique index, in SQL.
    """
    if agg.outcomes:
        conn.executemany(
            _ROLLUP, [(t, h, o, n, d) for (t, h, o), (n, d) in agg.outcomes.items()]
        )
    if agg.context or agg.error_context:
        keys = {(t, a, v) for (_, t, a, v, _, _) in agg.context}
        keys.update((t, a, v) for (_, t, _, _, a, v) in agg.error_context)
        conn.executemany(_CONTEXT_KEY, sorted(keys))
    if agg.context:
        hourly = []
        daily: dict[tuple[Any, ...], int] = {}
        for (h, t, a, v, o, x), n in agg.context.items():
            hourly.append((h, o, x, n, t, a, v))
            k = (h // 24, o, x, t, a, v)
            daily[k] = daily.get(k, 0) + n
        conn.executemany(_CONTEXT_ROLLUP, hourly)
        conn.executemany(_CONTEXT_DAILY, [(d, o, x, n, t, a, v)
                                          for (d, o, x, t, a, v), n in daily.items()])
    if agg.errors:
        conn.executemany(_ERROR_ROLLUP, [(*k, *v) for k, v in agg.errors.items()])
    if agg.error_context:
        conn.executemany(_ERROR_KEY, sorted({(t, et, sig)
                                             for (_, t, et, sig, _, _) in agg.error_context}))
        conn.executemany(_ERROR_CONTEXT_ROLLUP, [
            (h, n, t, et, sig, t, a, v)
            for (h, t, et, sig, a, v), n in agg.error_context.items()])


def _same(stored: tuple[Any, ...], rec: ImportRecord) -> bool:
    """A stored row (``_IMPORT_COMPARE`` columns) holds exactly this record."""
    ctx = None if stored[9] is None else json.loads(stored[9])
    return (stored[:9] == (rec.parent_id, rec.op_type, rec.key, rec.outcome, rec.started_at,
                           rec.ended_at, rec.duration, rec.error_type, rec.error_message)
            and stored[10] == rec.admission and ctx == (rec.context or None))


_IMPORT_COMPARE = (
    "parent_id, op_type, key, outcome, started_at, ended_at, duration, error_type,"
    " error_message, context, admission"
)
_IMPORT_COLUMNS = _COLUMNS + ", import_hash"
_IMPORT_NCOLS = _NCOLS + 1
_IMPORT_CHUNK = 2000


# -- a series of windows in one statement ----------------------------------------------

#: Parameters a window may bind in :meth:`SQLiteStore.outcome_counts_series` (an
#: hour range, two row ranges or shared hours); the windows per statement follow
#: from the connection's limit on parameters, read when the store opens.
_SERIES_PARAMS = 13


def _counted(aggregate: str) -> str:
    """A JSON array of ``aggregate`` per outcome, in :data:`SERIES_OUTCOMES` order."""
    return "json_array(" + ", ".join(
        f"{aggregate} FILTER (WHERE outcome = '{o}')" for o in SERIES_OUTCOMES) + ")"


_ROLLUP_COUNTS = _counted("sum(n)")
_ROW_COUNTS = _counted("count(*)")


def _series_sql(plan: SeriesPlan, op_type: str | None, top_level: bool) -> tuple[str, list[Any]]:
    """One statement for a series plan: rows of (tag, JSON array of counts), a
    window's counts spread over several rows (its hours, its edges, shared
    hours); "" when the plan reads nothing."""
    rests = plan.rests()
    ranges = [(name, cols, rs) for name, cols, rs in (
        ("h", "i, lo, hi", plan.hours), ("r", "i, lo, hi", plan.rows), ("g", "i, h", rests),
    ) if rs]
    if not ranges:
        return "", []
    marks = {"h": "(?, ?, ?)", "r": "(?, ?, ?)", "g": "(?, ?)"}
    ctes = [f"{name}({cols}) AS (VALUES " + ", ".join([marks[name]] * len(rs)) + ")"
            for name, cols, rs in ranges]
    args: list[Any] = [x for _, _, rs in ranges for r in rs for x in r]
    # Numbered after every VALUES parameter, which come first in the text.
    where = (" AND parent_id IS NULL" if top_level else "") + (
        f" AND op_type = ?{len(args) + 1}" if op_type else "")
    if op_type:
        args.append(op_type)
    selects = []
    if plan.hours:
        selects.append(
            f"SELECT h.i, (SELECT {_ROLLUP_COUNTS} FROM rollup_hourly WHERE hour >= h.lo"
            f" AND hour < h.hi{where}) FROM h")
    if plan.rows:
        selects.append(
            f"SELECT r.i, (SELECT {_ROW_COUNTS} FROM operations WHERE ended_at >= r.lo"
            f" AND ended_at < r.hi{where}) FROM r")
        selects.append(
            f"SELECT r.i, (SELECT {_ROW_COUNTS} FROM operations WHERE ended_at IS NULL"
            " AND outcome = 'abandoned' AND started_at >= r.lo AND started_at < r.hi"
            f"{where}) FROM r")
    if rests:
        # A shared hour's rollup, unless pruning took every row of it (see SeriesPlan).
        selects.append(
            f"SELECT g.i, (SELECT {_ROLLUP_COUNTS} FROM rollup_hourly WHERE hour = g.h{where})"
            f" FROM g WHERE EXISTS (SELECT 1 FROM operations WHERE ended_at >= g.h * {HOUR}"
            f" AND ended_at < (g.h + 1) * {HOUR}) OR EXISTS (SELECT 1 FROM operations"
            " WHERE ended_at IS NULL AND outcome = 'abandoned'"
            f" AND started_at >= g.h * {HOUR} AND started_at < (g.h + 1) * {HOUR})")
    return "WITH " + ", ".join(ctes) + " " + " UNION ALL ".join(selects), args


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
# ... and of a damaged file: never retried.
_CORRUPT_CODES = frozenset({
    11,   # SQLITE_CORRUPT
    26,   # SQLITE_NOTADB
})


def translate(exc: sqlite3.Error, where: Path) -> StoreError:
    """The :class:`StoreError` for a ``sqlite3`` error (unavailable when it may clear)."""
    code = getattr(exc, "sqlite_errorcode", None)
    primary = None if code is None else code & 0xFF
    transient = primary in _TRANSIENT_CODES or (
        primary is None and isinstance(exc, sqlite3.OperationalError)
        and any(w in str(exc) for w in ("locked", "busy", "disk", "unable to open"))
    )
    corrupt = primary in _CORRUPT_CODES or (
        primary is None and isinstance(exc, sqlite3.DatabaseError)
        and any(w in str(exc) for w in ("malformed", "not a database"))
    )
    cls = StoreCorruptError if corrupt else StoreUnavailableError if transient else StoreError
    err = cls(f"{where}: {exc}")
    err.__cause__ = exc
    return err


#: ``PRAGMA application_id`` of a learnkit database ("LKIT"): the marker checked on open.
APPLICATION_ID = 0x4C4B4954
_OUR_TABLES = frozenset({"operations", "rollup_hourly", "sessions", "meta"})


def _corrupt(path: Path, exc: BaseException) -> StoreCorruptError:
    return StoreCorruptError(
        f"{path}: damaged or not a database ({exc}); the file was not changed. Move it "
        "away or restore a backup."
    )


def check_ours(conn: sqlite3.Connection, path: Path) -> None:
    """Read-only checks that ``path`` (open on ``conn``) is a sound learnkit database.

    Raises:
        StoreError: another application's database, or a newer schema.
        StoreCorruptError: the file is damaged or not a database.
    """
    try:
        app = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if version > SCHEMA_VERSION and app in (0, APPLICATION_ID):
            raise StoreError(
                f"{path}: schema version {version} was written by a newer learnkit (this "
                f"one knows up to {SCHEMA_VERSION}); upgrade learnkit. The file was not changed."
            )
        ours = app == APPLICATION_ID or (
            app == 0 and 1 <= version <= SCHEMA_VERSION and tables >= _OUR_TABLES
        )
        if not ours and (tables or app != 0 or version != 0):
            raise StoreError(
                f"{path}: not a learnkit database (application_id {app}, user_version "
                f"{version}, tables {', '.join(sorted(tables)) or 'none'}); learnkit does "
                "not write to other applications' files. Point [storage] path elsewhere. "
                "The file was not changed."
            )
        problems = [r[0] for r in conn.execute("PRAGMA quick_check(5)")]
    except sqlite3.OperationalError as exc:
        if "locked" not in str(exc) and "busy" not in str(exc):
            raise _corrupt(path, exc) from exc
        raise StoreUnavailableError(
            f"{path}: locked by another process past the busy timeout ({exc}); try again "
            "when it lets go. The file was not changed."
        ) from exc
    except sqlite3.DatabaseError as exc:
        raise _corrupt(path, exc) from exc
    if problems != ["ok"]:
        raise StoreCorruptError(
            f"{path}: the database is damaged ({'; '.join(problems)}); the file was not "
            "changed. Move it away or restore a backup."
        )


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
    #: The operation of each insert, then of each update (see ``Batch.sources``).
    ops: list[Operation] = attrs.Factory(list)

    @property
    def sources(self) -> list[tuple[Operation, bool]]:
        """``(operation, inserted)`` for each row, inserts first."""
        n = len(self.inserts)
        return [(op, i < n) for i, op in enumerate(self.ops)]

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

    def __init__(
        self, path: Path, *, busy_timeout: float = 5.0, stale_after: float = 600.0,
        read_only: bool = False,
    ):
        self.path = path
        #: Open for reading only: no migration, no session, works on a read-only file.
        self.read_only = read_only
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
        self._series_windows = (999 - 1) // _SERIES_PARAMS  # until open reads the limit
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
        if self.read_only:
            await self._open_read_only()
            return
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="learnkit-writer")
        try:
            await self._in_thread(self._open_sync)
            self._read = await aiosqlite.connect(
                self.path, isolation_level=None, timeout=self.busy_timeout
            )
            await self._read.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            await self._read.execute("PRAGMA query_only = 1")
        except sqlite3.DatabaseError as exc:
            await run_shielded(self.aclose, 2 * self.busy_timeout + 5)
            raise StoreError(f"{self.path}: {exc}; is it a learnkit database?") from None
        except StoreError as exc:
            await run_shielded(self.aclose, 2 * self.busy_timeout + 5)
            if isinstance(exc, (StoreUnavailableError, StoreCorruptError)) or not isinstance(
                exc.__cause__, sqlite3.DatabaseError
            ):
                raise
            raise StoreError(f"{exc}; is it a learnkit database?") from None
        except BaseException:
            await run_shielded(self.aclose, 2 * self.busy_timeout + 5)
            raise

    async def _open_read_only(self) -> None:
        """Open for reading: checks only, never a write (nor a journal-mode switch)."""
        if not self.path.is_file():
            raise StoreError(f"{self.path}: no such database")

        def check(uri: str) -> None:
            conn = sqlite3.connect(uri, uri=True, timeout=self.busy_timeout)
            try:
                check_ours(conn, self.path)
                version = conn.execute("PRAGMA user_version").fetchone()[0]
            finally:
                conn.close()
            if version < SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path}: written by an older learnkit (schema {version}); open it "
                    "once with a program that records (or `learnkit thresholds apply`) to "
                    "migrate it"
                )

        base = "file:" + urllib.parse.quote(str(self.path.resolve()))
        for uri in (base + "?mode=ro", base + "?immutable=1"):
            try:
                await asyncio.to_thread(check, uri)
                self._read = await aiosqlite.connect(
                    uri, uri=True, isolation_level=None, timeout=self.busy_timeout
                )
                await self._read.execute(
                    f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
                await self._read.execute("PRAGMA query_only = 1")
                await self.fetchall("SELECT 1 FROM operations LIMIT 1")
                return
            except sqlite3.OperationalError as exc:  # a read-only WAL file needs immutable
                last: BaseException = exc
            except StoreUnavailableError as exc:
                last = exc
            if self._read is not None:
                await self._read.close()
                self._read = None
        raise StoreError(f"{self.path}: cannot be read ({last})")

    def _open_sync(self) -> None:
        existed = self.path.exists() and self.path.stat().st_size > 0
        if not self.path.exists():
            # Created readable by its owner only; SQLite gives -wal and -shm the same mode.
            with contextlib.suppress(FileExistsError):
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        conn = sqlite3.connect(
            self.path, isolation_level=None, timeout=self.busy_timeout,
            check_same_thread=False,
        )
        self._conn = conn
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
        if existed:
            self._check_ours(conn)  # before anything that could write to it
        mode = self._set_wal(conn)
        if mode != "wal":
            raise StoreError(f"{self.path}: cannot use WAL journal mode (got {mode})")
        conn.execute("PRAGMA synchronous = NORMAL")
        limit = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        self._rows_per_insert = max(1, min(2000, limit // _NCOLS))
        self._series_windows = max(1, (limit - 1) // _SERIES_PARAMS)  # 1 for the op_type
        with self._transaction():
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path}: schema version {version} was written by a newer "
                    f"learnkit (this one knows up to {SCHEMA_VERSION}); upgrade learnkit"
                )
            if version and EXCLUSIVE.intersection(range(version, SCHEMA_VERSION)):
                self._refuse_if_shared(conn, version)
            for i in range(version, SCHEMA_VERSION):
                for stmt in filter(str.strip, MIGRATIONS[i].split(";")):
                    conn.execute(stmt)
            if version != SCHEMA_VERSION:
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            if conn.execute("PRAGMA application_id").fetchone()[0] != APPLICATION_ID:
                conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            conn.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('next_id',"
                " (SELECT coalesce(max(id), 0) + 1 FROM operations))"
            )
        self._register_session()

    def _refuse_if_shared(self, conn: sqlite3.Connection, version: int) -> None:
        """Before a migration older processes cannot live with (:data:`EXCLUSIVE`):
        refuse while another session is alive, so none of its records is lost."""
        now = time.time()
        host = socket.gethostname()
        live = [
            f"{h}:{p}" for h, p, ps, hb in conn.execute(
                "SELECT host, pid, pid_start, heartbeat_at FROM sessions WHERE state = 'open'")
            if (h == host and _pid_alive(p, ps)) or (h != host and now - hb <= self.stale_after)
        ]
        if live:
            raise StoreUnavailableError(
                f"{self.path}: schema version {version} is open in {len(live)} other "
                f"learnkit process(es) ({', '.join(sorted(live)[:5])}); upgrading it to "
                f"{SCHEMA_VERSION} while they write would lose their records. Stop them "
                "(or let them finish), then open again. The file was not changed."
            )

    def _set_wal(self, conn: sqlite3.Connection) -> str:
        """``PRAGMA journal_mode = WAL``, retried while another process holds the new
        file (several processes creating one database at once): SQLite reports
        that as locked at once, without waiting for the busy timeout."""
        deadline = time.monotonic() + self.busy_timeout
        delay = 0.005
        while True:
            try:
                return str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() >= deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

    def _check_ours(self, conn: sqlite3.Connection) -> None:
        """Refuse, without writing a byte, a file that is not a sound learnkit database
        of a schema this version knows: damaged, another application's, or newer."""
        check_ours(conn, self.path)

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
                "SELECT id, host, pid, pid_start, heartbeat_at, state FROM sessions"
                " WHERE state IN ('open', 'closed-running') AND id != ?",
                (self.session_id,),
            ).fetchall()
            dead = [
                sid
                for sid, h, p, ps, hb, st in others
                if st == "closed-running"
                or (h == host and not _pid_alive(p, ps))
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
            # A session left open is recovered by the next open; so is one closed
            # with operations still running (their completions came too late).
            with contextlib.suppress(sqlite3.Error):
                running = conn.execute(
                    "SELECT 1 FROM operations WHERE ended_at IS NULL AND outcome = 'running'"
                    " AND session_id = ? LIMIT 1", (self.session_id,),
                ).fetchone()
                conn.execute(
                    "UPDATE sessions SET state = ?, ended_at = ? WHERE id = ?",
                    ("closed-running" if running else "closed", time.time(), self.session_id),
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
        inserted: list[Operation] = []
        updated: list[Operation] = []
        agg = self.encoder.aggregate()
        add = agg.add
        encode_context = self.encoder.encode_context
        sid = self.session_id
        coerced = 0
        for op in completed:
            ctx, bad, items = encode_context(op.op_type, op.context, op.outcome)
            coerced += bad or op.coerced > 0
            if op.persisted:
                updates.append(
                    (op.outcome, op.ended_at, op.duration, op.error_type,
                     op.error_message, ctx, op.admission, op.db_id, op.op_type)
                )
                updated.append(op)
            else:
                parent = op.parent
                inserts.append(
                    (id_of(op), op.op_type, op.key, op.outcome, op.started_at,
                     op.ended_at, op.duration, op.error_type, op.error_message, ctx,
                     None if parent is None else id_of(parent), sid, op.admission)
                )
                inserted.append(op)
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
            inserted.append(op)
            op.persisted = True
            i += 1
        return Prepared(inserts, updates, agg, coerced, inserted + updated)

    def split(self, batch: Batch) -> list[Batch]:
        """A batch of several rows as two halves, in order (to isolate a row that
        cannot be written); a batch of one row as itself."""
        if not isinstance(batch, Prepared):
            raise TypeError(f"not a batch this store prepared: {batch!r}")
        entries: list[tuple[bool, tuple[Any, ...], Operation]] = [
            (ins, row, op) for row, (op, ins) in zip(
                [*batch.inserts, *batch.updates], batch.sources, strict=True)]
        if len(entries) <= 1:
            return [batch]
        half = len(entries) // 2
        return [self._rebuild(entries[:half]), self._rebuild(entries[half:])]

    def _rebuild(self, entries: list[tuple[bool, tuple[Any, ...], Operation]]) -> Prepared:
        agg = self.encoder.aggregate()
        inserts: list[tuple[Any, ...]] = []
        updates: list[tuple[Any, ...]] = []
        inserted: list[Operation] = []
        updated: list[Operation] = []
        items_of = self.encoder.context_items
        for is_insert, row, op in entries:
            if is_insert:
                inserts.append(row)
                inserted.append(op)
                _, t, _, o, started, ended, dur, et, msg, ctx, _, _, adm = row
            else:
                updates.append(row)
                updated.append(op)
                o, ended, dur, et, msg, ctx, adm, _, t = row
                started = ended
            if o == "running":
                continue
            try:
                items = items_of(t, json.loads(ctx)) if ctx else ()
            except (TypeError, ValueError):
                items = ()
            agg.add(t, o, ended if ended is not None else started, dur, items, et, msg,
                    adm is not None)
        return Prepared(inserts, updates, agg, 0, inserted + updated)

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
            _write_rollups(conn, p.agg)
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

    async def stored_ids(self, ids: Sequence[int]) -> set[int]:
        """Those of ``ids`` that an operation row holds."""
        out: set[int] = set()
        for k in range(0, len(ids), 500):
            chunk = list(ids[k:k + 500])
            marks = ",".join("?" * len(chunk))
            out.update(r[0] for r in await self.fetchall(
                f"SELECT id FROM operations WHERE id IN ({marks})", chunk))
        return out

    async def export_rows(
        self, *, since: float | None = None, chunk: int = 10_000
    ) -> AsyncIterator[list[ExportRow]]:
        """Ended and abandoned operations (since ``since``) in id order, in chunks.

        Each chunk is one keyset query on the primary key, so memory stays
        bounded by ``chunk`` whatever the size of the store.
        """
        cols = ", ".join(EXPORT_FIELDS)
        where = "outcome != 'running'"
        args: list[Any] = []
        if since is not None:
            where += (" AND (ended_at >= ? OR (ended_at IS NULL AND outcome = 'abandoned'"
                      " AND started_at >= ?))")
            args = [since, since]
        last = -1
        while True:
            rows = await self.fetchall(
                f"SELECT {cols} FROM operations WHERE id > ? AND {where} ORDER BY id LIMIT ?",
                [last, *args, chunk],
            )
            if not rows:
                return
            last = rows[-1][0]
            yield rows

    async def context_attributes(self, *, since: float | None = None) -> list[str]:
        """Every context attribute of the exported operations, sorted."""
        where, args = "", []
        if since is not None:
            where = (" AND (o.ended_at >= ? OR (o.ended_at IS NULL AND o.started_at >= ?))")
            args = [since, since]
        rows = await self.fetchall(
            "SELECT DISTINCT j.key FROM operations o, json_each(o.context) j"
            f" WHERE o.context IS NOT NULL AND o.outcome != 'running'{where} ORDER BY 1", args,
        )
        return [r[0] for r in rows]

    async def import_operations(
        self, records: Iterable[ImportRecord], *,
        progress: Callable[[int], None] | None = None,
    ) -> ImportResult:
        """Write records and their rollups in one transaction, skipping stored ones.

        See :meth:`Store.import_operations`. Runs in the write thread from
        start to end: other writers (other processes included) wait for the
        lock, or retry, until it commits.
        """
        stop = threading.Event()
        try:
            return await self._in_thread(self._import_sync, records, progress, stop)
        except BaseException:
            stop.set()  # cancelled (Ctrl-C): the thread rolls back at its next chunk
            raise

    def _import_sync(
        self, records: Iterable[ImportRecord], progress: Callable[[int], None] | None,
        stop: threading.Event,
    ) -> ImportResult:
        result = ImportResult()
        conn = self._w()
        # A larger page cache while importing: the import-hash index takes
        # random keys. 64 MB, given back afterwards.
        cache = conn.execute("PRAGMA cache_size").fetchone()[0]
        conn.execute("PRAGMA cache_size = -65536")
        try:
            return self._import_transaction(conn, records, progress, stop, result)
        finally:
            conn.execute(f"PRAGMA cache_size = {int(cache)}")

    def _import_transaction(
        self, conn: sqlite3.Connection, records: Iterable[ImportRecord],
        progress: Callable[[int], None] | None, stop: threading.Event, result: ImportResult,
    ) -> ImportResult:
        with self._transaction():
            conn.execute("CREATE TEMP TABLE IF NOT EXISTS import_ids"
                         " (src INTEGER PRIMARY KEY, dst INTEGER NOT NULL)")
            conn.execute("DELETE FROM temp.import_ids")
            next_id = int(conn.execute(
                "SELECT value FROM meta WHERE key = 'next_id'").fetchone()[0])
            it = iter(records)
            chunk = list(islice(it, _IMPORT_CHUNK))
            # Keep the records' ids (an export) only in a store that has no
            # operations and has handed out no block of ids (a live process
            # may hold one it has not used yet).
            keep = (bool(chunk) and chunk[0].id is not None and next_id <= 1
                    and not conn.execute("SELECT 1 FROM operations LIMIT 1").fetchone())
            result.kept_ids = keep
            first_new, max_id = next_id, 0
            seen = 0
            while chunk:
                if stop.is_set():
                    raise StoreError(f"{self.path}: import cancelled; nothing was written")
                seen += len(chunk)
                next_id, top = self._import_chunk(conn, chunk, keep, next_id, result)
                max_id = max(max_id, top)
                if progress is not None:
                    progress(seen)
                chunk = list(islice(it, _IMPORT_CHUNK))
            if keep:
                next_id = max(next_id, max_id + 1)
            elif next_id > first_new:
                # parent ids were the records' own; map them to the new ids
                conn.execute(
                    "UPDATE operations SET parent_id = (SELECT dst FROM temp.import_ids"
                    " WHERE src = operations.parent_id)"
                    " WHERE id >= ? AND id < ? AND parent_id IS NOT NULL",
                    [first_new, next_id],
                )
            conn.execute("UPDATE meta SET value = ? WHERE key = 'next_id'"
                         " AND CAST(value AS INTEGER) < ?", [str(next_id), next_id])
            conn.execute("DELETE FROM temp.import_ids")
        return result

    def _import_chunk(
        self, conn: sqlite3.Connection, chunk: list[ImportRecord], keep: bool,
        next_id: int, result: ImportResult,
    ) -> tuple[int, int]:
        """Insert one chunk of an import; returns (next id, largest id written)."""
        # Already stored: the same content hash, or (a store's own export
        # imported back) the same id holding exactly the same record.
        digests = {r.digest: r for r in chunk}
        marks = ",".join("?" * len(digests))
        known: dict[bytes, int] = dict(conn.execute(
            f"SELECT import_hash, id FROM operations WHERE import_hash IN ({marks})",
            list(digests),
        ).fetchall())
        # (In a store that was empty, every stored id came from this import
        # and the hash already says whether it is the same record.)
        ids = [] if keep else [r.id for r in chunk if r.id is not None]
        same_id: dict[int, tuple[Any, ...]] = {}
        if ids:
            marks = ",".join("?" * len(ids))
            same_id = {row[0]: row[1:] for row in conn.execute(
                f"SELECT id, {_IMPORT_COMPARE} FROM operations WHERE id IN ({marks})", ids)}
        agg = self.encoder.aggregate()
        encode = self.encoder.encode_context
        inserts: list[Any] = []
        mapping: list[tuple[int, int]] = []
        rows = 0
        top = 0
        taken: set[bytes] = set()
        for r in chunk:
            dup = known.get(r.digest)
            if dup is None and r.digest in taken:
                dup = -1
            if dup is None and r.id is not None:
                stored = same_id.get(r.id)
                if stored is not None and _same(stored, r):
                    dup = r.id
            if dup is not None:
                result.duplicates += 1
                if not keep and r.id is not None and dup > 0:
                    mapping.append((r.id, dup))
                continue
            taken.add(r.digest)
            if keep:
                if r.id is None:
                    raise StoreError(
                        f"{self.path}: a record without an id after records with ids; "
                        "give every record an id, or none")
                new = r.id
            else:
                new = next_id
                next_id += 1
                if r.id is not None:
                    mapping.append((r.id, new))
            top = max(top, new)
            ctx, bad, items = encode(r.op_type, r.context, r.outcome)
            self.context_coerced += bad
            inserts.extend((new, r.op_type, r.key, r.outcome, r.started_at, r.ended_at,
                            r.duration, r.error_type, r.error_message, ctx, r.parent_id,
                            None, r.admission, r.digest))
            rows += 1
            if r.ended_at is None:
                agg.add(r.op_type, "abandoned", r.started_at, None, (), None, None)
            else:
                agg.add(r.op_type, r.outcome, r.ended_at, r.duration, items, r.error_type,
                        r.error_message, r.admission is not None)
        per = max(1, self._rows_per_insert * _NCOLS // _IMPORT_NCOLS)
        for k in range(0, rows, per):
            n = min(per, rows - k)
            one = "(" + ",".join("?" * _IMPORT_NCOLS) + ")"
            conn.execute(
                f"INSERT INTO operations ({_IMPORT_COLUMNS}) VALUES " + ",".join([one] * n),
                inserts[k * _IMPORT_NCOLS:(k + n) * _IMPORT_NCOLS],
            )
        if mapping:
            conn.executemany("INSERT OR REPLACE INTO temp.import_ids (src, dst) VALUES (?, ?)",
                             mapping)
        _write_rollups(conn, agg)
        result.added += rows
        return next_id, top

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

    async def top_level_counts(
        self, start: float, end: float, *, op_type: str | None = None
    ) -> dict[str, int]:
        """Operations with no parent per outcome in ``[start, end)``, from rows (the
        rollups do not know parents), through the ``ended_at`` index."""
        type_sql, type_args = ("AND op_type = ?", [op_type]) if op_type else ("", [])
        counts: dict[str, int] = {}
        for o, n in await self.fetchall(
            "SELECT outcome, count(*) FROM operations WHERE ended_at >= ? AND ended_at < ?"
            f" AND parent_id IS NULL {type_sql} GROUP BY 1", [start, end, *type_args],
        ) + await self.fetchall(
            "SELECT outcome, count(*) FROM operations WHERE ended_at IS NULL"
            " AND outcome = 'abandoned' AND started_at >= ? AND started_at < ?"
            f" AND parent_id IS NULL {type_sql} GROUP BY 1", [start, end, *type_args],
        ):
            counts[o] = counts.get(o, 0) + n
        return counts

    async def outcome_counts_series(
        self, windows: Sequence[tuple[float, float]], *, op_type: str | None = None,
        top_level: bool = False,
    ) -> list[dict[str, int]]:
        """Operations per outcome in each window ``[start, end)`` of ``windows``, in one
        statement (see :func:`~learnkit._storage.series.plan_series`).

        The same ranges :meth:`outcome_counts` (or :meth:`top_level_counts`) reads
        for each window, joined against a ``VALUES`` list of them: one correlated
        subquery per range, through the rollup's key or the ``ended_at`` index,
        counting every outcome at once (a JSON array, in
        :data:`~learnkit._storage.series.SERIES_OUTCOMES` order). Grouping the
        joined rows by (window, outcome) instead would sort every rollup row.
        """
        plan = plan_series(windows, top_level=top_level)
        triples: list[tuple[int, str, int]] = []
        for part in plan.chunks(self._series_windows):
            sql, args = _series_sql(part, op_type, top_level)
            if not sql:
                continue
            for i, packed in await self.fetchall(sql, args):
                triples.extend(zip(repeat(i), SERIES_OUTCOMES, json.loads(packed)))
        return collect(plan, triples)

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
            # Summed by integer key, then the keys' text joined to the sums.
            parts, part_args = _context_parts(h0, h1)
            for t, a, v, o, x, n in (await self.fetchall(
                "SELECT k.op_type, k.attr, k.value, r.outcome, r.explore, r.n FROM"
                f" (SELECT key, outcome, explore, sum(n) AS n FROM ({parts}) GROUP BY 1, 2, 3) r"
                " JOIN context_keys k ON k.id = r.key", part_args,
            ) if context else []):
                ws.context[(t, a, v, o, x)] = n
            for t, et, sig, n, first, last, example in await self.fetchall(
                "SELECT op_type, error_type, signature, sum(n), min(first_seen),"
                " max(last_seen), example FROM error_rollup"
                " WHERE hour >= ? AND hour < ? GROUP BY 1, 2, 3", args,
            ):
                ws.errors[(t, et, sig)] = [n, first, last, example]
            for t, et, sig, a, v, n in (await self.fetchall(
                "SELECT e.op_type, e.error_type, e.signature, k.attr, k.value, r.n FROM"
                " (SELECT error_key, key, sum(n) AS n FROM error_context_rollup_hourly"
                "  WHERE hour >= ? AND hour < ? GROUP BY 1, 2) r"
                " JOIN error_keys e ON e.id = r.error_key JOIN context_keys k ON k.id = r.key",
                args,
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
            parts, part_args = _context_parts(h0, h1, "key IN (SELECT id FROM keys)")
            for v, o, x, n in await self.fetchall(
                f"WITH keys AS (SELECT id FROM context_keys WHERE attr = ? {type_sql})"
                " SELECT k.value, r.outcome, r.explore, sum(r.n)"
                f" FROM ({parts}) r JOIN context_keys k ON k.id = r.key GROUP BY 1, 2, 3",
                [attr, *type_args, *part_args],
            ):
                out[(v, o, x)] = out.get((v, o, x), 0) + n
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
