"""What learnkit needs from a database: the :class:`Store` protocol, as its callers use it.

The writer, analytics, insights, the controller, the learning loop and the
command line talk to storage only through this protocol, so a second
backend can be written from this file alone. Backends raise
:class:`~learnkit.StoreError` for faults, and its subclass
:class:`~learnkit.StoreUnavailableError` for faults that may clear by
themselves (a lock held by another process, a full disk, a lost
connection): the writer keeps such batches and retries them. No backend
exception type (``sqlite3.Error``, a driver's errors) crosses this line.

Times are Unix seconds (UTC). A window ``[start, end)`` holds operations
that *ended* in it; abandoned operations, which never ended, count at their
start.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple, Protocol, runtime_checkable

import attrs

from .._model import Operation
from .rollup import Aggregate

__all__ = [
    "EXPORT_FIELDS", "Batch", "ExportRow", "ImportRecord", "ImportResult", "SharedThresholdStore",
    "Store", "WindowStats",
]

#: One stored operation as export sees it, in :data:`EXPORT_FIELDS` order
#: (``context`` is the stored JSON text or None).
ExportRow = tuple[Any, ...]

#: Every stored field of an operation but its session: ids, parent ids and
#: the exploration mark (``admission``: the probability with which refused
#: work was explored, None for work admitted by the thresholds).
EXPORT_FIELDS = (
    "id", "parent_id", "op_type", "outcome", "started_at", "ended_at", "duration", "key",
    "error_type", "error_message", "admission", "context",
)


class ImportRecord(NamedTuple):
    """One operation to import, validated (see :mod:`learnkit._transfer`)."""

    #: The id it had where it was exported, if any.
    id: int | None
    #: Its parent's id in the same numbering as ``id``.
    parent_id: int | None
    op_type: str
    outcome: str
    started_at: float
    #: None only for ``abandoned``.
    ended_at: float | None
    duration: float | None
    key: str | None
    error_type: str | None
    error_message: str | None
    #: Exploration mark (see :data:`EXPORT_FIELDS`).
    admission: float | None
    context: dict[str, Any] | None
    #: Content hash: the same record imported again is recognised by it.
    digest: bytes


@attrs.define
class ImportResult:
    """What an import did."""

    #: Records written.
    added: int = 0
    #: Records already in the store (imported before, or exported from it).
    duplicates: int = 0
    #: True when the records kept their ids (an empty store); else they got new
    #: ids and parent ids were mapped to them.
    kept_ids: bool = False


@attrs.define
class WindowStats:
    """Counts for one window, from rollups plus the edge rows."""

    start: float
    end: float
    #: (op_type, hour, outcome) -> operations
    outcomes: dict[tuple[str, int, str], int] = attrs.Factory(dict)
    #: (op_type, attribute, value JSON, outcome, explored 0/1) -> operations
    context: dict[tuple[str, str, str, str, int], int] = attrs.Factory(dict)
    #: (op_type, error_type, signature) -> [count, first_seen, last_seen, example]
    errors: dict[tuple[str, str, str], list[Any]] = attrs.Factory(dict)
    #: (op_type, error_type, signature, attribute, value JSON) -> failures
    error_context: dict[tuple[str, str, str, str, str], int] = attrs.Factory(dict)

    def merge(self, agg: Aggregate) -> None:
        """Add an :class:`Aggregate` (edge rows) into these counts."""
        for (t, h, o), (n, _) in agg.outcomes.items():
            k = (t, h, o)
            self.outcomes[k] = self.outcomes.get(k, 0) + int(n)
        for (_, t, a, v, o, x), n in agg.context.items():
            ck = (t, a, v, o, x)
            self.context[ck] = self.context.get(ck, 0) + n
        for (_, t, et, sig), (n, first, last, ex) in agg.errors.items():
            ek = (t, et, sig)
            e = self.errors.get(ek)
            if e is None:
                self.errors[ek] = [n, first, last, ex]
            else:
                e[0] += n
                e[1] = min(e[1], first)
                if last > e[2]:
                    e[2], e[3] = last, ex
        for (_, t, et, sig, a, v), n in agg.error_context.items():
            eck = (t, et, sig, a, v)
            self.error_context[eck] = self.error_context.get(eck, 0) + n


class Batch(Protocol):
    """A batch turned into rows by :meth:`Store.prepare`, ready to commit."""

    @property
    def rows(self) -> int:
        """Rows this batch inserts or updates."""
        ...

    @property
    def sources(self) -> list[tuple[Operation, bool]]:
        """The operations behind its rows, in order: ``(operation, inserted)``,
        ``inserted`` False for an update of a row written before. A closing
        writer that cannot commit the batch keeps them in the spill file."""
        ...


class Store(Protocol):
    """A learnkit database. SQLite is the embedded default."""

    #: Where the data lives, for messages (a path, or a URL without password).
    location: str
    #: This process's session (for recovering operations of dead processes).
    session_id: int
    #: Context values stored as their repr because JSON could not hold them.
    context_coerced: int
    #: Running operations of dead processes marked abandoned by :meth:`open`.
    abandoned_on_open: int

    # -- lifecycle -----------------------------------------------------------

    async def open(self) -> None:
        """Create or migrate the schema, register this process, recover the dead."""
        ...

    async def aclose(self) -> None:
        """Mark this session closed and release every connection. Idempotent."""
        ...

    async def heartbeat(self) -> None:
        """Tell other processes this session is alive."""
        ...

    # -- writing (the writer's pipeline) ---------------------------------------

    async def reserve_ids(self, needed: int) -> None:
        """Make sure at least ``needed`` row ids are reserved for this process."""
        ...

    def prepare(self, completed: Sequence[Operation], running: Sequence[Operation]) -> Batch:
        """Turn operations into rows and rollup counts; no I/O, on the loop thread.

        ``completed`` are inserted (or update their ``running`` row);
        ``running`` become ``running`` rows unless already stored. Ids are
        assigned here, parents before children. Batches are committed in the
        order they were prepared.
        """
        ...

    def commit(self, batch: Batch) -> asyncio.Future[int]:
        """Start committing ``batch`` in one transaction now (so the next batch can be
        prepared meanwhile); the future resolves to the rows touched.

        A batch whose commit failed may be committed again.
        """
        ...

    def split(self, batch: Batch) -> list[Batch]:
        """A batch of several rows as two smaller ones, in order, to isolate a row
        that cannot be written; a batch of one row as ``[batch]``."""
        ...

    # -- reading ---------------------------------------------------------------

    async def has_operations(self) -> bool:
        """True when any operation is stored."""
        ...

    async def stored_ids(self, ids: Sequence[int]) -> set[int]:
        """Those of ``ids`` that an operation row holds."""
        ...

    async def op_types(self) -> list[str]:
        """Every operation type ever recorded."""
        ...

    async def outcome_counts(
        self, start: float, end: float, *, op_type: str | None = None, by_type: bool = False
    ) -> dict[tuple[str, str], int]:
        """Operations per (op_type, or "" unless ``by_type``; outcome) in ``[start, end)``."""
        ...

    async def top_level_counts(
        self, start: float, end: float, *, op_type: str | None = None
    ) -> dict[str, int]:
        """Operations with no parent per outcome in ``[start, end)`` (abandoned ones at
        their start)."""
        ...

    async def outcome_counts_series(
        self, windows: Sequence[tuple[float, float]], *, op_type: str | None = None,
        top_level: bool = False,
    ) -> list[dict[str, int]]:
        """Operations per outcome in each window ``(start, end)`` of ``windows``, in
        their order, outcomes with none left out: what :meth:`outcome_counts` (or,
        with ``top_level``, :meth:`top_level_counts`) returns for each window, read
        in a number of statements that does not grow with the windows (one, unless
        there are thousands). Bounds must be finite and no window may end before
        it starts (:class:`ValueError`); see
        :func:`~learnkit._storage.series.plan_series`."""
        ...

    async def durations(
        self, start: float, end: float, *, op_type: str | None = None
    ) -> list[float]:
        """Sorted durations of operations that ended in ``[start, end)``."""
        ...

    async def window_stats(self, start: float, end: float, *, context: bool = True) -> WindowStats:
        """Everything analysis needs about ``[start, end)``; outcomes and errors only
        without ``context``."""
        ...

    async def context_counts(
        self, start: float, end: float, attr: str, op_type: str | None = None
    ) -> dict[tuple[str, str, int], int]:
        """(value JSON, outcome, explored) -> operations with ``attr`` in ``[start, end)``."""
        ...

    def export_rows(
        self, *, since: float | None = None, chunk: int = 10_000
    ) -> AsyncIterator[list[ExportRow]]:
        """Ended and abandoned operations (ended, or for abandoned ones started, at or
        after ``since``) in id order, :data:`EXPORT_FIELDS` per row, in chunks;
        memory bounded by ``chunk``."""
        ...

    async def context_attributes(self, *, since: float | None = None) -> list[str]:
        """Every context attribute of the operations :meth:`export_rows` yields, sorted."""
        ...

    async def import_operations(
        self, records: Iterable[ImportRecord], *,
        progress: Callable[[int], None] | None = None,
    ) -> ImportResult:
        """Write ``records`` and their rollups in one transaction, skipping those
        already stored.

        All or nothing: if iterating ``records`` raises (a bad line, Ctrl-C),
        nothing is written and the exception propagates. Into a store with
        no operations, records keep their ids; otherwise they get new ids and
        parent ids are mapped within the import. ``progress`` is called with
        the records read so far, about every thousand records.
        """
        ...

    # -- thresholds and coordination -------------------------------------------

    async def record_change(self, row: dict[str, Any]) -> int:
        """Insert a threshold change (columns of ``threshold_changes``); returns its id."""
        ...

    async def update_change(self, change_id: int, **fields: Any) -> None:
        """Set fields (status, verdict, verdict_at) of a recorded change."""
        ...

    async def changes(self, name: str | None = None) -> list[dict[str, Any]]:
        """Recorded threshold changes, oldest first."""
        ...

    async def meta_get(self, key: str) -> str | None:
        """A value of the store's key-value table."""
        ...

    async def meta_swap(self, key: str, expected: str | None, new: str) -> bool:
        """Set ``key`` to ``new`` only if it still holds ``expected``; True if it did."""
        ...

    # -- retention ---------------------------------------------------------------

    async def prune(self, before: float) -> int:
        """Delete raw rows that ended before ``before`` (rounded down to a whole
        hour; abandoned rows by their start); rollups and the change history stay.
        Returns the rows deleted."""
        ...


@runtime_checkable
class SharedThresholdStore(Protocol):
    """A store many hosts share, which holds the threshold values themselves.

    Every host reads the values from here (overlaid on learnkit.toml's) and a
    change is a compare-and-set on the threshold's version, so exactly one
    host applies it. PostgreSQL is one; the SQLite file is not.
    """

    async def threshold_values(self) -> dict[str, tuple[float, int]]:
        """Every shared threshold: name -> (value, version)."""
        ...

    async def threshold_seed(self, values: Mapping[str, float]) -> None:
        """Add the thresholds the store does not hold yet, at these values."""
        ...

    async def threshold_swap(
        self,
        name: str,
        version: int | None,
        value: float,
        change: Mapping[str, Any] | None = None,
        *,
        rolled_back: int | None = None,
    ) -> int | None:
        """Set ``name`` to ``value`` if still at ``version`` (None: whatever it is),
        recording ``change`` (and marking change ``rolled_back``) in the same
        transaction; the change's id, or None when another host moved it first."""
        ...
