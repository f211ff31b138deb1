"""Formatting shared by descriptions, reports and the dashboard: one home."""

from __future__ import annotations

import datetime as dt
import math
import re
from typing import Any

WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def percent(x: float | None, digits: int = 0) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{x:.{digits}%}"


def value_text(v: Any, *, quote: bool = True) -> str:
    """A value as written in a condition: 7 not 7.0; strings quoted unless ``quote`` is off."""
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return repr(v) if quote and isinstance(v, str) else str(v)


# C0 and C1 control characters (newline, carriage return, escape, ...) and the
# Unicode line and paragraph separators: in recorded data they would start a
# new line of a report or move a terminal's cursor.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
#: What ends a shortened text in a view.
ELLIPSIS = "\u2026"


def one_line(text: object, limit: int | None = None) -> str:
    """Recorded data as one line of plain text, for any view.

    Control characters and line breaks become one space each run, so an op
    type or message cannot start a heading, a table row or a terminal escape;
    text longer than ``limit`` characters is cut and ends with an ellipsis.
    """
    s = _CONTROL.sub(" ", str(text))
    if limit is not None and len(s) > limit:
        s = s[: max(0, limit - 1)] + ELLIPSIS
    return s


def day(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d")


def hours_span(hours: list[int], sep: str = "-") -> str:
    """``02:00-04:00 UTC`` for the consecutive hours [2, 3]."""
    start, end = hours[0], (hours[-1] + 1) % 24
    return f"{start:02d}:00{sep}{end:02d}:00 UTC"


def hours_text(hours: list[int]) -> str:
    return "between " + hours_span(hours, " and ")


def signed(x: float | None) -> str:
    return "n/a" if x is None else f"{x:+.2f}"


def json_safe(v: Any) -> Any:
    """Plain JSON data: attrs classes as dicts, tuples as lists, non-finite floats as None."""
    import attrs

    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {str(k): json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [json_safe(x) for x in v]
    if attrs.has(type(v)):
        return json_safe(attrs.asdict(v, recurse=False))
    return v
