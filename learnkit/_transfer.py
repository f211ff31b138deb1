"""Import and export of outcomes as JSON Lines or CSV.

One record per operation, with the fields of :meth:`learnkit.Kit.record`:
``op_type``, ``outcome``, ``started_at``, ``ended_at``, ``key``,
``error_type``, ``error_message``, ``duration`` and ``context``. Times are
Unix seconds or ISO 8601 (a time without a zone is UTC). In CSV, context
attributes are columns named ``context.NAME``; in JSON Lines, ``context`` is
an object.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import attrs

from ._model import RECORDABLE_OUTCOMES

__all__ = ["FIELDS", "Problem", "export_rows", "parse_file"]

FIELDS = ("op_type", "outcome", "started_at", "ended_at", "key", "error_type",
          "error_message", "duration")


@attrs.frozen
class Problem:
    """A line that cannot be imported, and why."""

    #: 1-based line number in the file (for CSV, the header is line 1).
    line: int
    #: What is wrong and how to fix it.
    message: str


def _time(name: str, value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(f"{name} must be Unix seconds or an ISO 8601 time, got {value!r}")
    if isinstance(value, (int, float)):
        t = float(value)
    elif isinstance(value, str) and value.strip():
        v = value.strip()
        try:
            t = float(v)
        except ValueError:
            try:
                parsed = dt.datetime.fromisoformat(v.replace("Z", "+00:00"))
            except ValueError:
                raise ValueError(
                    f"{name} {value!r} is neither Unix seconds nor an ISO 8601 time "
                    "(e.g. 2026-11-24T10:00:00Z)"
                ) from None
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=dt.UTC)
            t = parsed.timestamp()
    else:
        raise ValueError(f"{name} is required (Unix seconds or ISO 8601)")
    if not math.isfinite(t):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return t


def _scalar(text: str) -> Any:
    """A CSV cell as the JSON scalar it spells, else the text itself."""
    if text == "":
        return None
    try:
        v = json.loads(text)
    except ValueError:
        return text
    return v if isinstance(v, (int, float, bool, str)) or v is None else text


def validate(obj: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments for :meth:`learnkit.Kit.record` from one record.

    Raises:
        ValueError: naming the field at fault and what would be valid.
    """
    unknown = sorted(set(obj) - set(FIELDS) - {"context"})
    if unknown:
        raise ValueError(f"unknown field {unknown[0]!r}; fields are "
                         f"{', '.join(FIELDS)}, context")
    op_type = obj.get("op_type")
    if not isinstance(op_type, str) or not op_type:
        raise ValueError("op_type is required (a non-empty string)")
    outcome = obj.get("outcome")
    if outcome not in RECORDABLE_OUTCOMES:
        raise ValueError(f"outcome {outcome!r} is not one of {', '.join(RECORDABLE_OUTCOMES)}")
    started = _time("started_at", obj.get("started_at"))
    ended = started if obj.get("ended_at") in (None, "") else _time("ended_at", obj["ended_at"])
    if ended < started:
        raise ValueError(f"ended_at ({obj['ended_at']}) is before started_at "
                         f"({obj['started_at']})")
    out: dict[str, Any] = {"op_type": op_type, "outcome": outcome, "started_at": started,
                           "ended_at": ended}
    for name in ("key", "error_type", "error_message"):
        v = obj.get(name)
        if v not in (None, ""):
            out[name] = str(v)
    d = obj.get("duration")
    if d not in (None, ""):
        try:
            dur = float(d)
        except (TypeError, ValueError):
            raise ValueError(f"duration must be seconds, got {d!r}") from None
        if not math.isfinite(dur) or dur < 0:
            raise ValueError(f"duration must be a finite, non-negative number, got {d!r}")
        out["duration"] = dur
    ctx = obj.get("context")
    if ctx not in (None, ""):
        if not isinstance(ctx, dict):
            raise ValueError("context must be an object of attribute: value")
        out["context"] = ctx
    return out


def _jsonl(f: TextIO) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
    for number, line in enumerate(f, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            yield number, None, f"not valid JSON ({exc.msg} at column {exc.colno})"
            continue
        if not isinstance(obj, dict):
            yield number, None, "each line must be a JSON object"
            continue
        yield number, obj, None


def _csv(f: TextIO) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
    reader = csv.DictReader(f)
    if reader.fieldnames is None:
        return
    for row in reader:
        number = reader.line_num
        if None in row:
            yield number, None, "more cells than the header has columns"
            continue
        obj: dict[str, Any] = {}
        ctx: dict[str, Any] = {}
        for k, v in row.items():
            if k.startswith("context."):
                if v not in (None, ""):
                    ctx[k[len("context."):]] = _scalar(v)
            elif k == "context" and v:
                try:
                    parsed = json.loads(v)
                except ValueError:
                    yield number, None, "the context column must hold a JSON object"
                    break
                ctx.update(parsed if isinstance(parsed, dict) else {})
            elif v not in (None, ""):
                obj[k] = v
        else:
            if ctx:
                obj["context"] = ctx
            yield number, obj, None


def parse_file(
    path: Path, fmt: str | None = None
) -> tuple[list[tuple[int, dict[str, Any]]], list[Problem]]:
    """Every record of a file, validated; and every line that is not valid.

    ``fmt`` is ``jsonl`` or ``csv``; by default the file's suffix decides
    (``.csv`` is CSV, anything else JSON Lines).
    """
    fmt = fmt or ("csv" if path.suffix.lower() == ".csv" else "jsonl")
    good: list[tuple[int, dict[str, Any]]] = []
    bad: list[Problem] = []
    with path.open(encoding="utf-8", newline="" if fmt == "csv" else None) as f:
        for number, obj, error in (_csv(f) if fmt == "csv" else _jsonl(f)):
            if obj is None:
                bad.append(Problem(number, error or "unreadable"))
                continue
            try:
                good.append((number, validate(obj)))
            except ValueError as exc:
                bad.append(Problem(number, str(exc)))
    return good, bad


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat().replace("+00:00", "Z")


def export_rows(rows: list[tuple[Any, ...]], fmt: str, out: TextIO) -> int:
    """Write operation rows (as selected by the CLI) as JSON Lines or CSV."""
    records = []
    for op_type, outcome, started, ended, key, et, em, duration, context in rows:
        rec: dict[str, Any] = {"op_type": op_type, "outcome": outcome,
                               "started_at": _iso(started), "ended_at": _iso(ended)}
        for name, v in (("key", key), ("error_type", et), ("error_message", em),
                        ("duration", duration)):
            if v is not None:
                rec[name] = v
        if context:
            rec["context"] = json.loads(context)
        records.append(rec)
    if fmt == "csv":
        attrs_ = sorted({a for r in records for a in r.get("context", {})})
        w = csv.writer(out)
        w.writerow([*FIELDS, *(f"context.{a}" for a in attrs_)])
        for r in records:
            ctx = r.get("context", {})
            w.writerow([r.get(f, "") if r.get(f) is not None else "" for f in FIELDS]
                       + [_cell(ctx.get(a)) for a in attrs_])
    else:
        for r in records:
            out.write(json.dumps(r, ensure_ascii=False) + "\n")
    return len(records)


def _cell(v: Any) -> str:
    if v is None:
        return ""
    return v if isinstance(v, str) else json.dumps(v)


