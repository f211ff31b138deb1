"""Orchestrator messages: Python tracebacks and pytest failure reports.

A multi-line traceback or pytest report is reduced to one line,
``⟦ExcType @ file:function⟧ normalised message``: the exception type and the
raising frame (the last frame shown, by file name and function, not line
number, so an edit above it does not move the event) form a key that
clustering never generalises; the first line of the exception message follows,
with ``repr`` noise masked: quoted values (in an exception message they are
``repr`` of values), object addresses, temporary paths, parametrised test ids,
commit hashes and generated name suffixes. ANSI colour codes and per-line log prefixes
(timestamps, levels, logger names) are stripped first.
"""

from __future__ import annotations

import re

__all__ = ["KEY_CLOSE", "KEY_OPEN", "normalise_report", "strip_ansi"]

KEY_OPEN = "⟦"
KEY_CLOSE = "⟧"
WILD = "<*>"

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")
_TB_HEAD = "Traceback (most recent call last):"
_FRAME = re.compile(r'^\s*File "([^"]+)", line \d+(?:, in (\S+))?')
_PYTEST_LOC = re.compile(r"^(\S+?\.py):\d+: (?:in (\S+)|([A-Za-z_][\w.]*))\s*$")
_EXC_LINE = re.compile(
    r"^(?:E\s+)?((?:[A-Za-z_]\w*\.)*[A-Z]\w*(?:Error|Exception|Exit|Interrupt|Warning|Failure"
    r"|Iteration|Timeout|Failed|Skipped))(?::\s?(.*))?$"
)
_E_LINE = re.compile(r"^E(?: {2,}|\t)(.*)$")
_FAILED_LINE = re.compile(r"^(?:FAILED|ERROR) (\S+?)(?:::(\S+))?(?: - (.*))?$")
# repr noise, masked in the exception message
_NOISE = [
    re.compile(r"(?<![\w'\"])'[^'\n]*'(?![\w'])|(?<![\w'\"])\"[^\"\n]*\"(?![\w\"])"),  # reprs
    re.compile(r"<([\w.]+) object at 0x[0-9a-fA-F]+>"),
    re.compile(r"\b0x[0-9a-fA-F]+\b"),
    re.compile(r"(?<![\w/])(?:/private)?/(?:tmp|var/folders|var/tmp)/[^\s'\",)\]}:]*"),
    re.compile(r"(?<=\w)\[[^\]\s]*\](?=[\s:,'\"]|$)"),  # parametrised test ids
    re.compile(r"(?<![\w])(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{7,40}(?![\w])"),  # commits
    re.compile(r"(?<=[A-Za-z])[_-](?=[a-z0-9]*\d)[a-z0-9]{5,}(?![\w])"),  # generated suffixes
    re.compile(r"(?<=\btmp)[a-z0-9_]{6,}\b"),
]
_NOISE_REPL = ["'<*>'", r"<\1 object at <*>>", WILD, WILD, "[<*>]", WILD, "_<*>", WILD]


def strip_ansi(text: str) -> str:
    """Remove ANSI escape sequences (colours, cursor moves)."""
    return _ANSI.sub("", text) if "\x1b" in text else text


def _strip_prefixes(lines: list[str], anchor: int, head: str) -> list[str]:
    """Remove the log prefix found before ``head`` on line ``anchor`` from every line."""
    prefix = lines[anchor].split(head, 1)[0]
    if not prefix.strip():
        return lines
    shape = re.sub(r"\d", "0", prefix)
    n = len(prefix)
    out = []
    for line in lines:
        if len(line) >= n and re.sub(r"\d", "0", line[:n]) == shape:
            line = line[n:]
        out.append(line)
    return out


def _frame_name(path: str, func: str | None) -> str:
    base = path.replace("\\", "/").rsplit("/", 1)[-1]
    return f"{base}:{func}" if func else base


def _clean_message(message: str) -> str:
    message = message.strip()
    for pat, repl in zip(_NOISE, _NOISE_REPL, strict=True):
        message = pat.sub(repl, message)
    return message[:300]


def _key(exc: str, frame: str | None, message: str) -> str:
    where = f" @ {frame}" if frame else ""
    return f"{KEY_OPEN}{exc}{where}{KEY_CLOSE} {_clean_message(message)}".rstrip()


def normalise_report(text: str) -> str | None:
    """The one-line form of a traceback or pytest report; None when ``text`` is neither."""
    if "\n" not in text and not text.startswith(("FAILED ", "ERROR ")):
        return None
    text = strip_ansi(text)
    lines = text.splitlines()
    tb = [i for i, line in enumerate(lines) if _TB_HEAD in line]
    if tb:
        lines = _strip_prefixes(lines, tb[-1], _TB_HEAD)
        return _from_traceback(lines[tb[-1] + 1:])
    if any(_E_LINE.match(line) for line in lines) or any(
        _PYTEST_LOC.match(line) for line in lines
    ):
        return _from_pytest(lines)
    if len(lines) == 1:
        m = _FAILED_LINE.match(lines[0])
        if m:
            msg = m.group(3) or ""
            exc = _EXC_LINE.match(msg)
            typ = exc.group(1) if exc else "AssertionError"
            rest = (exc.group(2) or "") if exc else msg
            test = re.sub(r"\[.*\]$", "", m.group(2) or "")
            return _key(typ, _frame_name(m.group(1), test or None), rest)
    return None


def _from_traceback(lines: list[str]) -> str | None:
    frame: str | None = None
    exc_at = -1
    for i, line in enumerate(lines):
        f = _FRAME.match(line)
        if f:
            frame = _frame_name(f.group(1), f.group(2))
            continue
        if frame is not None and line and not line[0].isspace():
            m = _EXC_LINE.match(line.strip())
            if m:
                exc_at = i
                break
    if exc_at < 0:
        return None
    m = _EXC_LINE.match(lines[exc_at].strip())
    assert m is not None
    return _key(m.group(1), frame, m.group(2) or "")


def _from_pytest(lines: list[str]) -> str | None:
    frame: str | None = None
    exc: str | None = None
    first_e: str | None = None
    func: str | None = None
    for line in lines:
        s = line.strip()
        if s.startswith("def ") and "(" in s:
            func = s[4:s.index("(")]
        m = _E_LINE.match(line)
        if m:
            body = m.group(1).strip()
            if first_e is None:
                first_e = body
            em = _EXC_LINE.match(body)
            if em and exc is None:
                exc = em.group(1)
                first_e = em.group(2) or ""
            continue
        loc = _PYTEST_LOC.match(s)
        if loc:
            if loc.group(2):  # "path:12: in func" (--tb=short / long chains)
                frame = _frame_name(loc.group(1), loc.group(2))
            else:
                frame = _frame_name(loc.group(1), func)
                exc = exc or loc.group(3)
    if exc is None and first_e is None:
        return None
    return _key(exc or "AssertionError", frame, first_e or "")
