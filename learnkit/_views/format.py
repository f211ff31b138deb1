"""Formatting shared by descriptions, reports and the dashboard: one home."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def percent(x: float | None, digits: int = 0) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{x:.{digits}%}"


def value_text(v: Any, *, quote: bool = True) -> str:
    """A value as written in a condition: 7 not 7.0; strings quoted unless ``quote`` is off."""
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return repr(v) if quote and isinstance(v, str) else str(v)


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
