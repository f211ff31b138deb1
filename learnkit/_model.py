"""Outcomes and the in-memory operation record shared by tracking and the writer."""

from __future__ import annotations

from typing import Any

__all__ = ["DAY", "ENDED_OUTCOMES", "HOUR", "RECORDABLE_OUTCOMES", "Operation", "error_type_name"]

#: Seconds in an hour and a day: rollups are hourly, windows are in days.
HOUR = 3600
DAY = 86400.0


#: How an operation can end (``running`` is stored while it is in flight, never an end).
ENDED_OUTCOMES = ("success", "failure", "cancelled", "abandoned", "skipped")
#: The outcomes ``kit.record`` accepts (``abandoned`` is found, never recorded).
RECORDABLE_OUTCOMES = ("success", "failure", "cancelled", "skipped")

_type_names: dict[type, str] = {}


def error_type_name(exc_type: type[BaseException]) -> str:
    """``module.QualName`` of an exception type; builtins have no module."""
    name = _type_names.get(exc_type)
    if name is None:
        module = exc_type.__module__
        qual = exc_type.__qualname__
        name = qual if module == "builtins" else f"{module}.{qual}"
        _type_names[exc_type] = name
    return name


class Operation:
    """One tracked operation, from start to end.

    The handle that ``async with track(...) as op`` yields and that
    :func:`learnkit.current_operation` returns. Use :meth:`set` to add context
    while running and :meth:`fail` to record a failure without raising.
    Everything else is read-only for users; the writer fills in ``db_id``.
    """

    __slots__ = (
        "admission",
        "context",
        "db_id",
        "duration",
        "ended_at",
        "error_message",
        "error_type",
        "key",
        "op_type",
        "outcome",
        "parent",
        "persisted",
        "started_at",
        "t0",
    )

    def __init__(
        self,
        op_type: str,
        key: str | None,
        context: dict[str, Any] | None,
        started_at: float,
        t0: float,
        parent: Operation | None,
    ) -> None:
        self.op_type = op_type
        self.key = key
        self.context = context
        self.started_at = started_at
        self.t0 = t0
        self.parent = parent
        self.ended_at: float | None = None
        self.duration: float | None = None
        self.outcome: str = "running"
        self.error_type: str | None = None
        self.error_message: str | None = None
        self.db_id: int | None = None
        self.persisted = False
        self.admission: float | None = None

    def set(self, **context: Any) -> None:
        """Add or replace context attributes (``op.set(files_changed=3)``)."""
        if self.context is None:
            self.context = context
        else:
            self.context.update(context)

    def fail(self, error_type: str, message: str | None = None) -> None:
        """Mark the operation failed without raising.

        The failure is recorded when the block or function ends, even if an
        exception escapes afterwards: the explicit error type and message are
        kept (the exception still propagates).
        """
        self.outcome = "failure"
        self.error_type = str(error_type)
        self.error_message = None if message is None else str(message)

    def __repr__(self) -> str:
        return (
            f"<Operation {self.op_type!r} key={self.key!r} outcome={self.outcome!r}"
            f" id={self.db_id}>"
        )
