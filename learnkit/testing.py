"""A test mode for your own test suite: a throwaway kit, and assertions on what it tracked.

.. code-block:: python

    import learnkit.testing

    async def test_failed_tests_are_tracked():
        async with learnkit.testing.kit() as kit:
            await process_issue(Issue(1, complexity=9))      # your @tracked code
            ops = await learnkit.testing.tracked(kit, "run_tests")
            assert [op.outcome for op in ops] == ["failure"]
            await learnkit.testing.assert_tracked(kit, "process_issue", outcome="failure",
                                                  complexity=9)

:func:`kit` opens a real kit on a temporary directory (a learnkit.toml with
the learning loop off, and a fresh SQLite database), makes it current, and
deletes everything when the block ends; nothing touches your project's
learnkit.toml or database, and ``LEARNKIT_CONFIG`` is ignored.
:func:`tracked` flushes and returns the completed operations as
:class:`TrackedOperation` records, oldest first.
"""

from __future__ import annotations

import json
import random as _random
import tempfile
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs

from ._kit import Kit, open

__all__ = ["TrackedOperation", "assert_tracked", "kit", "tracked"]

_CONFIG = """\
[learning]
enabled = false

[storage]
path = "learnkit.db"
flush_interval = 0.01
"""


@attrs.frozen
class TrackedOperation:
    """One completed operation as the kit stored it."""

    id: int
    #: The enclosing operation's id, or None for a top-level operation.
    parent_id: int | None
    op_type: str
    outcome: str
    key: str | None
    error_type: str | None
    error_message: str | None
    started_at: float
    ended_at: float | None
    duration: float | None
    #: The probability with which refused work was explored (None: admitted).
    explore_probability: float | None
    context: dict[str, Any] = attrs.Factory(dict)


@asynccontextmanager
async def kit(
    config: str | None = None,
    *,
    thresholds: Mapping[str, Mapping[str, Any]] | None = None,
    clock: Callable[[], float] | None = None,
    random: _random.Random | None = None,
) -> AsyncIterator[Kit]:
    """A current kit on a temporary directory, removed afterwards.

    Args:
        config: the whole learnkit.toml text (default: the loop off, fast flushes).
        thresholds: ``[thresholds.NAME]`` tables to add, e.g.
            ``{"max_complexity": {"value": 8, "attribute": "complexity"}}``.
        clock: as in :func:`learnkit.open`.
        random: as in :func:`learnkit.open`.
    """
    text = _CONFIG if config is None else config
    for name, table in (thresholds or {}).items():
        text += f"\n[thresholds.{name}]\n" + "".join(
            f"{k} = {json.dumps(v)}\n" for k, v in table.items())
    with tempfile.TemporaryDirectory(prefix="learnkit-test-") as d:
        path = Path(d) / "learnkit.toml"
        path.write_text(text, encoding="utf-8")
        async with open(path, clock=clock, random=random) as k:
            yield k


async def tracked(k: Kit, op_type: str | None = None) -> list[TrackedOperation]:
    """Every completed (or abandoned) operation so far, oldest first; flushes first."""
    await k.flush()
    out = []
    async for chunk in k.database.store.export_rows():
        for (id_, parent, t, outcome, started, ended, duration, key, et, em, adm,
             ctx) in chunk:
            if op_type is None or t == op_type:
                out.append(TrackedOperation(
                    id_, parent, t, outcome, key, et, em, started, ended, duration, adm,
                    json.loads(ctx) if ctx else {}))
    return out


async def assert_tracked(
    k: Kit, op_type: str, *, outcome: str | None = None, count: int | None = None,
    error_type: str | None = None, **context: Any,
) -> list[TrackedOperation]:
    """Assert that operations of ``op_type`` matching every given field were tracked.

    ``count`` (default: at least one) is the number expected; ``context``
    attributes must match exactly. Returns the matching operations.

    Raises:
        AssertionError: saying what was expected and what was tracked instead.
    """
    ops = await tracked(k, op_type)
    match = [op for op in ops
             if (outcome is None or op.outcome == outcome)
             and (error_type is None or op.error_type == error_type)
             and all(op.context.get(a, _MISSING) == v for a, v in context.items())]
    wanted = {"outcome": outcome, "error_type": error_type, **context}
    shown = ", ".join(f"{k_}={v!r}" for k_, v in wanted.items() if v is not None)
    if (count is None and not match) or (count is not None and len(match) != count):
        seen = "; ".join(f"{op.outcome} {op.error_type or ''} {op.context}".strip()
                         for op in ops[:10]) or "nothing"
        raise AssertionError(
            f"expected {'some' if count is None else count} {op_type!r} operation(s) with "
            f"{shown or 'any fields'}, found {len(match)}; {op_type!r} tracked: {seen}")
    return match


_MISSING = object()
