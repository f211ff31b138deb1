"""Import and export of outcomes: JSON Lines, CSV, and Parquet (with pyarrow).

One record per operation, every stored field but the writing process's
session: ``id``, ``parent_id``, ``op_type``, ``outcome``, ``started_at``,
``ended_at``, ``duration``, ``key``, ``error_type``, ``error_message``,
``explore_probability`` (the exploration mark) and ``context``. Export
writes times as Unix seconds, exactly; import also reads ISO 8601 (a time
without a zone is UTC). In CSV, context attributes are columns named
``context.NAME`` whose cells are JSON when they parse as JSON, else text (a
text that would parse is written JSON-quoted, so nothing changes type); in
JSON Lines, ``context`` is an object.

Both directions stream: a file is read line by line and the store
chunk by chunk, so memory does not grow with the size of either.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import marshal
import math
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import IO, Any, BinaryIO

import attrs

from ._errors import LearnkitError
from ._model import MAX_TIME, RECORDABLE_OUTCOMES
from ._storage.protocol import EXPORT_FIELDS, ExportRow, ImportRecord

__all__ = [
    "FIELDS", "FORMATS", "InvalidRecords", "Problem", "Problems", "Source", "read_records",
    "validate", "write_rows",
]

#: Fields of a record, in export order (``context`` last; in CSV it is
#: spread over ``context.NAME`` columns).
FIELDS = ("id", "parent_id", "op_type", "outcome", "started_at", "ended_at", "duration", "key",
          "error_type", "error_message", "explore_probability", "context")
#: The outcomes an import accepts: what ``kit.record`` accepts, and
#: ``abandoned`` (no ``ended_at``), which export writes for operations of
#: processes that died while running them.
IMPORTABLE_OUTCOMES = (*RECORDABLE_OUTCOMES, "abandoned")
FORMATS = ("jsonl", "csv", "parquet")
_SCALARS = ("id", "parent_id", "op_type", "outcome", "started_at", "ended_at", "duration", "key",
            "error_type", "error_message", "explore_probability")
_KNOWN = frozenset(FIELDS)


@attrs.frozen
class Problem:
    """A line that cannot be imported, and why."""

    #: 1-based line number in the file (for CSV, the header is line 1).
    line: int
    #: What is wrong and how to fix it.
    message: str


@attrs.define
class Problems:
    """The invalid lines of a file: every one counted, the first ``keep`` kept."""

    keep: int = 20
    count: int = 0
    first: list[Problem] = attrs.Factory(list)

    def add(self, line: int, message: str) -> None:
        self.count += 1
        if len(self.first) < self.keep:
            self.first.append(Problem(line, message))


class InvalidRecords(LearnkitError, ValueError):
    """Raised at the end of reading when lines were invalid: nothing is imported."""


def format_of(path: Path, fmt: str | None) -> str:
    """``fmt``, or the one ``path``'s suffix names (``.csv``, ``.parquet``; else JSON Lines)."""
    if fmt:
        return fmt
    suffix = path.suffix.lower()
    return {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}.get(suffix, "jsonl")


# -- reading ------------------------------------------------------------------------


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
    return _in_range(name, t, value)


def _in_range(name: str, t: float, value: Any) -> float:
    """``t`` when it lies in ``[0, MAX_TIME]``, as every record's times must."""
    if not 0.0 <= t <= MAX_TIME:
        raise ValueError(f"{name} {value!r} is not between 1970-01-01 and 9999-12-31 "
                         "(Unix seconds 0 to 253402300799)")
    return t


def _int(name: str, value: Any) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    try:
        i = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive integer, got {value!r}") from None
    if i < 1 or (isinstance(value, float) and i != value):
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return i


def _number(name: str, value: Any, *, upper: float = math.inf) -> float | None:
    if value is None or value == "":
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if isinstance(value, bool) or not (math.isfinite(v) and 0 <= v <= upper):
        raise ValueError(f"{name} must be a finite number in [0, {upper:g}], got {value!r}")
    return v


def _text(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


_OUTCOMES = frozenset(IMPORTABLE_OUTCOMES)
_blake2b = hashlib.blake2b
_marshal = marshal.dumps


def validate(obj: dict[str, Any]) -> ImportRecord:
    """The :class:`ImportRecord` of one record.

    Raises:
        ValueError: naming the field at fault and what would be valid.
    """
    if not obj.keys() <= _KNOWN:
        unknown = sorted(obj.keys() - _KNOWN)
        raise ValueError(f"unknown field {unknown[0]!r}; fields are {', '.join(FIELDS)}")
    get = obj.get
    op_type = get("op_type")
    if type(op_type) is not str or not op_type:
        raise ValueError("op_type is required (a non-empty string)")
    outcome = get("outcome")
    if type(outcome) is not str or outcome not in _OUTCOMES:
        raise ValueError(f"outcome {outcome!r} is not one of {', '.join(IMPORTABLE_OUTCOMES)}")
    raw: Any = get("started_at")
    started = _in_range("started_at", float(raw), raw) if type(raw) in (int, float) and (
        math.isfinite(raw)) else _time("started_at", raw)
    raw_end = get("ended_at")
    ended: float | None
    if outcome == "abandoned":
        if raw_end not in (None, ""):
            raise ValueError("an abandoned operation has no ended_at (it never ended)")
        ended = None
    else:
        if raw_end is None or raw_end == "":
            ended = started
        elif type(raw_end) in (int, float) and math.isfinite(raw_end):
            ended = _in_range("ended_at", float(raw_end), raw_end)
        else:
            ended = _time("ended_at", raw_end)
        if ended < started:
            raise ValueError(f"ended_at ({raw_end}) is before started_at ({raw})")
    raw = get("duration")
    if raw is None or raw == "":
        duration = None if ended is None else ended - started
    elif type(raw) is float and 0 <= raw < math.inf:
        duration = raw
    else:
        duration = _number("duration", raw)
    error_type = get("error_type")
    if error_type is not None and type(error_type) is not str:
        error_type = _text(error_type)
    if not error_type:
        error_type = "Failure" if outcome == "failure" else None  # as kit.record does
    raw = get("id")
    id_ = raw if type(raw) is int and raw > 0 else _int("id", raw)
    raw = get("parent_id")
    parent = raw if type(raw) is int and raw > 0 else _int("parent_id", raw)
    raw = get("explore_probability")
    explored = None if raw is None else _number("explore_probability", raw, upper=1.0)
    key = get("key")
    if (key is not None and type(key) is not str) or key == "":
        key = _text(key)
    message = get("error_message")
    if (message is not None and type(message) is not str) or message == "":
        message = _text(message)
    ctx = get("context")
    if not ctx:
        ctx = None
    elif type(ctx) is not dict:
        raise ValueError("context must be an object of attribute: value")
    rec = (id_, parent, op_type, outcome, started, ended, duration, key, error_type, message,
           explored)
    try:
        # marshal version 2 writes values, never object identity (no back-references),
        # so equal records give equal bytes; floats are written exactly.
        canonical = _marshal(rec if ctx is None else (rec, sorted(ctx.items())), 2)
    except ValueError:  # a value marshal cannot write
        canonical = repr((rec, sorted(ctx.items()) if ctx else None)).encode()
    return ImportRecord(*rec, ctx, _blake2b(canonical, digest_size=16).digest())


class _Counting(io.RawIOBase):
    """A binary file that counts the bytes read through it (for progress)."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.position = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self._raw.readinto(buffer)  # type: ignore[attr-defined]
        self.position += n or 0
        return n or 0


class Source:
    """A file being imported: its format, size and how far reading has got."""

    def __init__(self, path: Path, fmt: str | None = None) -> None:
        self.path = path
        self.format = format_of(path, fmt)
        self.size = path.stat().st_size
        self._counting: _Counting | None = None

    @property
    def position(self) -> int:
        """Bytes read so far."""
        return 0 if self._counting is None else self._counting.position

    def _lines(self, raw: BinaryIO) -> IO[bytes]:
        self._counting = _Counting(raw)
        return io.BufferedReader(self._counting, 1 << 16)


def _decoded(f: IO[bytes], problems: Problems) -> Iterator[str]:
    """The lines of ``f`` as text, one per physical line: a line that is not UTF-8
    is reported (with the byte at fault) and given as an empty line."""
    for number, raw in enumerate(f, 1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            problems.add(number, f"not valid UTF-8 (byte {exc.start + 1} of the line); "
                                 "save the file as UTF-8")
            yield "\n"
            continue
        yield line.removeprefix("\ufeff") if number == 1 else line


def _jsonl(f: IO[bytes], problems: Problems) -> Iterator[tuple[int, dict[str, Any]]]:
    for number, line in enumerate(_decoded(f, problems), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.add(number, f"not valid JSON ({exc.msg} at column {exc.colno})")
            continue
        except (ValueError, RecursionError) as exc:  # a number of 5,000 digits, deep nesting
            problems.add(number, f"not a record learnkit can read ({exc})"[:300])
            continue
        if not isinstance(obj, dict):
            problems.add(number, "each line must be a JSON object")
            continue
        yield number, obj


def _cell_value(text: str) -> Any:
    """A CSV cell as the JSON value it spells, else the text itself."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return text


def _rows(reader: Any, problems: Problems) -> Iterator[list[str]]:
    """The rows of a CSV reader; a row it cannot read (a cell over the csv module's
    limit) is reported and skipped."""
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            problems.add(reader.line_num, f"not valid CSV ({exc})")
            continue
        yield row


def _csv(f: IO[bytes], problems: Problems) -> Iterator[tuple[int, dict[str, Any]]]:
    reader = csv.reader(_decoded(f, problems))
    rows = _rows(reader, problems)
    header = next(rows, None)
    if header is None:
        return
    width = len(header)
    ctx_cols = [(i, h[len("context."):]) for i, h in enumerate(header) if h.startswith("context.")]
    plain = [(i, h) for i, h in enumerate(header) if not h.startswith("context.")]
    for row in rows:
        number = reader.line_num
        if not row:
            continue
        if len(row) > width:
            problems.add(number, "more cells than the header has columns")
            continue
        obj: dict[str, Any] = {}
        for i, h in plain:
            if i < len(row) and row[i] != "":
                obj[h] = _restored(row[i])
        ctx: dict[str, Any] = {}
        for i, name in ctx_cols:
            if i < len(row) and row[i] != "":
                ctx[name] = _cell_value(_restored(row[i]))
        if "context" in obj:  # a whole JSON object in one column
            try:
                whole = json.loads(obj["context"])
            except (ValueError, RecursionError):
                whole = None
            if not isinstance(whole, dict):
                problems.add(number, "the context column must hold a JSON object")
                continue
            ctx = {**whole, **ctx}
        if ctx:
            obj["context"] = ctx
        yield number, obj


def _parquet(path: Path, problems: Problems) -> Iterator[tuple[int, dict[str, Any]]]:
    pq = _pyarrow_parquet()
    number = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=10_000):
        for obj in batch.to_pylist():
            number += 1
            rec = {k: v for k, v in obj.items() if v is not None and k != "context"}
            ctx = obj.get("context")
            if ctx:
                rec["context"] = json.loads(ctx)
            yield number, rec


def read_records(
    source: Source, problems: Problems, *, skip_invalid: bool = False
) -> Iterator[ImportRecord]:
    """Every valid record of ``source``, read as a stream; invalid lines go to ``problems``.

    Raises:
        InvalidRecords: at the end, when a line was invalid and not
            ``skip_invalid`` (so that an import in one transaction rolls back).
    """
    with source.path.open("rb") as raw:
        if source.format == "parquet":
            parsed = _parquet(source.path, problems)
        else:
            lines = source._lines(raw)
            parsed = _csv(lines, problems) if source.format == "csv" else _jsonl(lines, problems)
        for number, obj in parsed:
            try:
                yield validate(obj)
            except (ValueError, TypeError, RecursionError) as exc:
                problems.add(number, str(exc)[:300])
    if problems.count and not skip_invalid:
        raise InvalidRecords(f"{problems.count:,} invalid line(s) in {source.path}")


# -- writing ------------------------------------------------------------------------

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(", ", ": ")).encode
_I = {name: i for i, name in enumerate(EXPORT_FIELDS)}


def _scalars(row: ExportRow) -> list[Any]:
    """A stored row's scalar fields in :data:`FIELDS` order (context left out)."""
    return [row[_I["id"]], row[_I["parent_id"]], row[_I["op_type"]], row[_I["outcome"]],
            row[_I["started_at"]], row[_I["ended_at"]], row[_I["duration"]], row[_I["key"]],
            row[_I["error_type"]], row[_I["error_message"]], row[_I["admission"]]]


def _jsonl_line(row: ExportRow) -> str:
    rec = {k: v for k, v in zip(_SCALARS, _scalars(row), strict=True) if v is not None}
    ctx = row[_I["context"]]
    line = _dumps(rec)
    if ctx:  # stored JSON text: spliced in as it is
        line = line[:-1] + ', "context": ' + ctx + "}"
    return line + "\n"


#: Text a spreadsheet would run as a formula: optional quotes, then = + - @ tab CR.
_FORMULA = re.compile(r"'*[=+\-@\t\r]")


def _defused(text: str) -> str:
    """Text as a CSV cell no spreadsheet runs as a formula (OWASP's leading quote).

    Reversible: one quote is added to text that starts with any number of quotes
    and then a formula character, and :func:`_restored` takes one away."""
    return "'" + text if _FORMULA.match(text) else text


def _restored(cell: str) -> str:
    """The text :func:`_defused` made a cell of."""
    return cell[1:] if cell.startswith("'") and _FORMULA.match(cell, 1) else cell


def _cell(v: Any) -> str:
    """A context value as a CSV cell that reads back as the same value."""
    if v is None:
        return "null"
    if isinstance(v, str):
        if v == "":
            return '""'
        try:
            json.loads(v)
        except (ValueError, RecursionError):
            return _defused(v)
        return json.dumps(v, ensure_ascii=False)
    return json.dumps(v, ensure_ascii=False)


def _csv_scalar(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, str):
        return _defused(v)
    return repr(v) if isinstance(v, float) else str(v)


async def write_rows(
    chunks: AsyncIterator[list[ExportRow]], fmt: str, out: IO[str] | Path,
    *, attributes: list[str] | None = None, progress: Any = None,
) -> int:
    """Write exported rows as JSON Lines, CSV (``context.NAME`` columns from
    ``attributes``) or Parquet (``out`` a path); returns the rows written.

    Rows are written as each chunk arrives; ``progress(rows)`` is called
    after each chunk.
    """
    n = 0
    if fmt == "parquet":
        if not isinstance(out, Path):
            raise ValueError("Parquet is written to a file: pass --output FILE.parquet")
        return await _write_parquet(chunks, out, progress)
    assert not isinstance(out, Path)
    if fmt == "csv":
        attrs_ = attributes or []
        w = csv.writer(out, lineterminator="\n")
        w.writerow([*_SCALARS, *(f"context.{a}" for a in attrs_)])
        async for chunk in chunks:
            for row in chunk:
                cells = [_csv_scalar(v) for v in _scalars(row)]
                ctx_text = row[_I["context"]]
                if attrs_:
                    ctx = json.loads(ctx_text) if ctx_text else {}
                    cells += [_cell(ctx[a]) if a in ctx else "" for a in attrs_]
                w.writerow(cells)
            n += len(chunk)
            if progress is not None:
                progress(n)
        return n
    async for chunk in chunks:
        out.write("".join(map(_jsonl_line, chunk)))
        n += len(chunk)
        if progress is not None:
            progress(n)
    return n


def _pyarrow_parquet() -> Any:
    try:
        import pyarrow.parquet as pq  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        raise LearnkitError(
            "Parquet needs pyarrow: pip install 'learnkit[parquet]'"
        ) from None
    return pq


async def _write_parquet(
    chunks: AsyncIterator[list[ExportRow]], path: Path, progress: Any
) -> int:
    pq = _pyarrow_parquet()
    import pyarrow as pa  # type: ignore[import-not-found, unused-ignore]

    schema = pa.schema([
        ("id", pa.int64()), ("parent_id", pa.int64()), ("op_type", pa.string()),
        ("outcome", pa.string()), ("started_at", pa.float64()), ("ended_at", pa.float64()),
        ("duration", pa.float64()), ("key", pa.string()), ("error_type", pa.string()),
        ("error_message", pa.string()), ("explore_probability", pa.float64()),
        ("context", pa.string()),  # JSON text: attributes differ from row to row
    ])
    n = 0
    with pq.ParquetWriter(path, schema) as writer:
        async for chunk in chunks:
            columns = list(zip(*[[*_scalars(r), r[_I["context"]]] for r in chunk], strict=True))
            writer.write_table(pa.Table.from_arrays(
                [pa.array(c, type=f.type) for c, f in zip(columns, schema, strict=True)],
                schema=schema))
            n += len(chunk)
            if progress is not None:
                progress(n)
    return n
