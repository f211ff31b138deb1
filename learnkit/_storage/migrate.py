"""Moving an SQLite history into a PostgreSQL store (``learnkit migrate --to URL``).

Everything goes in one PostgreSQL transaction, so a failed migration leaves
the target as it was: the rows (``COPY``, with new ids from the target's
sequence and parent links remapped), the four rollups (added to whatever the
target holds, so that several hosts' files can be merged, and so that
history already pruned from the rows survives), the change log, and the
threshold values (the target keeps those it already has). Operations still
``running`` in the file (their process gone, or still alive: stop it first)
arrive ``abandoned``. A file is migrated into one target once: the target
remembers it (``--force`` to do it again).
"""

from __future__ import annotations

import itertools
import os
import socket
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs

from .._errors import StoreError
from .._model import HOUR
from .postgres import PostgresStore, _scrub, _ScrubbedAggregate
from .sqlite import HistoryReader, SQLiteStore

__all__ = ["MigrationReport", "migrate_sqlite"]

_COLS = (
    "id", "op_type", "key", "outcome", "started_at", "ended_at", "duration", "error_type",
    "error_message", "context", "parent_id", "session_id", "admission",
)
_CHANGE_COLS = (
    "at", "name", "old_value", "new_value", "kind", "confidence", "reason", "evidence",
    "samples", "status", "verdict", "verdict_at",
)


@attrs.frozen
class MigrationReport:
    """What a migration moved."""

    #: Operation rows copied.
    operations: int
    #: Of which were ``running`` in the file and arrive ``abandoned``.
    abandoned: int
    #: Rollup rows added (hourly, context, error, error-context).
    rollup_rows: int
    #: Threshold changes copied.
    changes: int
    #: Thresholds the target did not hold, now at the file's values.
    thresholds_seeded: int


async def migrate_sqlite(
    source: Path,
    target: PostgresStore,
    thresholds: Mapping[str, float],
    *,
    force: bool = False,
    chunk: int = 20_000,
    progress: Callable[[int], None] | None = None,
) -> MigrationReport:
    """Copy the SQLite store at ``source`` into ``target`` (opened here and closed).

    Raises:
        StoreError: no such file; the file was migrated into this target
            already (without ``force``); or either store fails.
    """
    if not source.is_file():
        raise StoreError(f"{source}: no such database to migrate")
    upgrade = SQLiteStore(source)  # bring an old file to the current schema first
    await upgrade.open()
    await upgrade.aclose()
    src = HistoryReader(source)
    try:
        await target.open()
        try:
            return await target._run(
                lambda conn: _copy(conn, src, source, target, thresholds, force, chunk, progress)
            )
        finally:
            await target.aclose()
    finally:
        src.close()


async def _copy(
    conn: Any,
    src: HistoryReader,
    source: Path,
    target: PostgresStore,
    thresholds: Mapping[str, float],
    force: bool,
    chunk: int,
    progress: Callable[[int], None] | None,
) -> MigrationReport:
    mark = f"migrated:{socket.gethostname()}:{source.resolve()}"
    total = src.count()
    async with conn.transaction():
        done = await conn.fetchval("SELECT value FROM meta WHERE key = $1", mark)
        if done is not None and not force:
            raise StoreError(
                f"{source} was migrated into {target.location} already ({done}); "
                "pass --force to copy it again (its operations would count twice)"
            )
        # Ids: one consecutive range of blocks from the target's sequence, in the file's order.
        blocks = max(1, -(-total // target.ID_BLOCK))
        for _ in range(20):
            got = sorted(r[0] for r in await conn.fetch(
                "SELECT nextval('operations_id_seq') FROM generate_series(1, $1)", blocks))
            if all(b - a == target.ID_BLOCK for a, b in itertools.pairwise(got)):
                break
        else:
            raise StoreError(f"{target.location}: could not reserve {total} ids; retry")
        ids = {old: got[0] + k for k, old in enumerate(src.ids())}
        sid = target.session_id
        abandoned = moved = 0
        abandoned_hours: dict[tuple[str, int, str], list[float]] = {}
        for batch in src.operations(_COLS, chunk):
            records = []
            for r in batch:
                row = [_scrub(x) for x in r]
                row[0] = ids[r[0]]
                row[10] = None if r[10] is None else ids.get(r[10])
                row[11] = sid
                if row[3] == "running":
                    row[3] = "abandoned"
                    abandoned += 1
                    key = (row[1], int(row[4] // HOUR), "abandoned")
                    abandoned_hours.setdefault(key, [0, 0.0])[0] += 1
                records.append(tuple(row))
            await conn.copy_records_to_table("operations", records=records, columns=_COLS)
            moved += len(records)
            if progress is not None:
                progress(moved)
        hourly, context, errors, error_context = src.rollups()
        outcomes: dict[Any, list[float]] = {(t, h, o): [n, d] for t, h, o, n, d in hourly}
        for k, (n, _) in abandoned_hours.items():
            outcomes.setdefault(k, [0, 0.0])[0] += n
        agg = _ScrubbedAggregate.of(_ScrubbedAggregate(
            outcomes,
            {tuple(r[:6]): r[6] for r in context},
            {tuple(r[:4]): list(r[4:]) for r in errors},
            {tuple(r[:6]): r[6] for r in error_context},
        ))
        await target._add_rollups(conn, agg)
        rollup_rows = (len(agg.outcomes) + len(agg.context) + len(agg.errors)
                       + len(agg.error_context))
        changes = src.changes(_CHANGE_COLS)
        for c in changes:
            await target._insert_change(conn, dict(zip(_CHANGE_COLS, c, strict=True)))
        seeded = await conn.execute(
            "INSERT INTO thresholds (name, value, version, updated_at)"
            " SELECT n, v, 1, extract(epoch from clock_timestamp())"
            " FROM unnest($1::text[], $2::float8[]) AS s(n, v) ON CONFLICT (name) DO NOTHING",
            list(thresholds), [float(v) for v in thresholds.values()],
        )
        last = src.meta("last_analysis")
        if last is not None:
            await conn.execute(
                "INSERT INTO meta (key, value) VALUES ('last_analysis', $1)"
                " ON CONFLICT (key) DO NOTHING", last,
            )
        await conn.execute(
            "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key)"
            " DO UPDATE SET value = excluded.value",
            mark, f"{moved} operations, pid {os.getpid()}",
        )
    return MigrationReport(moved, abandoned, rollup_rows, len(changes),
                           int(seeded.split()[-1]))
