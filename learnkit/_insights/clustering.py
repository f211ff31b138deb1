"""Error clustering: mask variables, then learn templates from the data.

Two stages, one default configuration for every kind of message:

1. **Masking** replaces what is variable by construction with ``<*>``:
   URLs, e-mail addresses, UUIDs, IP addresses, host names, paths, hex ids,
   dates and times, quoted values, numbers with their units, and any other
   number not glued to the end of a word (``ssh2`` stays, ``blk_-69`` does
   not). Tokens made only of wildcards and punctuation become ``<*>`` and
   runs of ``<*>`` collapse into one, so an optional variable part (``785
   bytes`` versus ``785 bytes (0.77 KB)``) does not change the shape.
2. **Template mining** groups masked messages by token count and first
   token (a first token holding digits, such as an error code, may vary and
   is judged like any other position), then splits each group top-down on
   the position with the fewest distinct words, as long as that position
   looks like a choice between
   constants (two words, ``SCREEN_ON`` / ``SCREEN_OFF``) rather than a
   variable (three or more words, or words that variables were seen to take
   elsewhere). Positions left varying inside a group become ``<*>``.

Drain (He et al., 2017) groups by length and first tokens and merges by a
similarity threshold; that threshold both merges short distinct events and
splits variable-length ones. Deciding per position from the value
distribution avoids the threshold.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence

__all__ = ["cluster_messages", "mask", "signature"]

WILD = "<*>"

_TLD = (
    "com|net|org|edu|gov|mil|int|io|co|cn|hk|uk|de|jp|fr|ru|us|in|br|au|ca|nl|eu|info|biz"
    "|local|localdomain|localhost|internal|lan|corp|home|me|tv|cc|ai|app|dev|cloud|xyz|site"
)
_UNITS = (
    r"(?:[KMGTP]i?B|[kmgt]b|bytes?|B|[mun]?s|µs|sec|secs|seconds?|mins?|minutes?"
    r"|h|hrs?|hours?|days?|%)"
)
# (trigger, pattern): a pattern runs only when its trigger text occurs in the
# message, which skips most of them cheaply. Order matters: specific shapes
# (URLs, addresses, hosts, paths) before the generic number rule.
_MASKS: list[tuple[str, re.Pattern[str]]] = [
    ("://", re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s,;'\"<>()\[\]{}]+")),
    ("@", re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b")),
    ("-", re.compile(r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}"
                     r"-[0-9a-fA-F]{12}\b")),
    ("-", re.compile(r"\b\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?"
                     r"(?:Z|[+-]\d{2}:?\d{2})?)?")),
    (".", re.compile(r"(?<![\w.])\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?(?![\w.])")),
    (":", re.compile(r"(?<![\w:])(?:[0-9a-fA-F]{1,4}:){2,7}[0-9a-fA-F]{1,4}(?![\w:])")),
    (".", re.compile(r"(?<![\w.-])(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?\.)+"
                     rf"(?:{_TLD})(?::\d+)?(?![\w-]|\.[\w-])")),
    # Lower-case dotted names (hosts, file names): not Java classes or
    # constants such as android.intent.action.SCREEN_ON, which have capitals.
    (".", re.compile(r"(?<![\w.-])(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)+[a-z]{2,}(?::\d+)?"
                     r"(?![\w.-])")),
    # name:port
    (":", re.compile(r"(?<![\w.-])(?=[\w.-]*[A-Za-z])[\w.-]+:\d{2,5}(?![\w.:])")),
    (":\\", re.compile(r"(?<![\w.])[a-zA-Z]:\\[^\s,;'\"]+")),
    ("/", re.compile(r"(?<![\w:/.<>])(?:\.{0,2}/[^\s/,;'\"()\[\]{}<>]+)+/?")),
    ("0", re.compile(r"\b0[xX][0-9a-fA-F]+\b")),
    ("", re.compile(r"(?<![\w])(?=[0-9a-fA-F]*\d)(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{8,}"
                    r"(?![\w])")),
    (":", re.compile(r"\b\d{1,2}:\d{2}(?::\d{2})?(?:[.,]\d+)?\b")),
    # key=value: the value
    ("=", re.compile(r"(?<=\w=)[^\s,;&]+")),
    # numbers, with their unit when one follows; not digits ending a word (ssh2)
    ("", re.compile(rf"(?<![A-Za-z0-9])[-+]?\d+(?:[.,]\d+)*(?:{_UNITS}(?![A-Za-z]))?")),
]
_NUMBER = re.compile(r"[-+]?\d+(?:[.,]\d+)*")
_WORDISH = re.compile(r"[\w-]+")
# One pass per token: on a short string the first matching shape wins,
# in the order above.
_TOKEN_MASK = re.compile("|".join(f"(?:{p.pattern})" for _, p in _MASKS))
_WORDISH_MASK = re.compile(
    "|".join(f"(?:{p.pattern})" for t, p in _MASKS if t in ("-", "0", ""))
)
# Quoted values may hold spaces, so they are masked on the whole message.
_QUOTED = re.compile(r"(?<!\w)'[^'\n]*'(?!\w)|(?<!\w)\"[^\"\n]*\"(?!\w)")
_UNIT_WORDS = frozenset(re.findall(r"[A-Za-z%µ]+", "KB MB GB TB PB KiB MiB GiB TiB kb mb gb tb B "
                                   "byte bytes s ms us ns µs sec secs second seconds min mins "
                                   "minute minutes h hr hrs hour hours day days %"))
_STRIP = "()[]{}<>,;:.\"'"
_token_cache: dict[str, str] = {}
_ONLY_WILD_PUNCT = re.compile(r"^(?:<\*>|[^\w<>]|[<>])+$")
_HAS_WILD = "<*>"


def _mask_token(tok: str) -> str:
    out = _token_cache.get(tok)
    if out is None:
        if _NUMBER.fullmatch(tok):
            return WILD
        # Word-like tokens (blk_-69, part-0001, deadbeef42) can only hold ids,
        # dates, hex and numbers: skip the address and path shapes.
        out = (_WORDISH_MASK if _WORDISH.fullmatch(tok) else _TOKEN_MASK).sub(WILD, tok)
        if _HAS_WILD in out and _ONLY_WILD_PUNCT.match(out):
            out = WILD
        if len(_token_cache) >= 50_000:
            _token_cache.clear()
        _token_cache[tok] = out
    return out


def _tokens(message: str) -> tuple[str, ...]:
    if "'" in message or '"' in message:
        message = _QUOTED.sub(WILD, message)
    out: list[str] = []
    for tok in message.split():
        if not tok.isalpha():
            tok = _mask_token(tok)
        elif out and out[-1] == WILD and tok in _UNIT_WORDS:
            continue  # "785 bytes", "1.98 KB": the unit belongs to the number
        if tok == WILD and out and out[-1] == WILD:
            continue
        if out and out[-1] == WILD and tok.strip(_STRIP) in _UNIT_WORDS:
            continue  # "(1.98 KB)": the closing part of a masked quantity
        out.append(tok)
    return tuple(out)


def mask(message: str) -> str:
    """Replace the variable parts of a message with ``<*>`` (stage 1).

    Whitespace is normalised to single spaces and runs of variables collapse
    into one ``<*>``.
    """
    return " ".join(_tokens(message))


def signature(message: str, *, coarse: bool = False) -> str:
    """The masked, normalised form of one message: its provisional template.

    Messages with the same signature always fall in the same cluster, so
    signatures can be counted at write time and mined later. ``coarse``
    also treats every token holding a digit as a variable.
    """
    toks = _tokens(message)
    if coarse:
        out: list[str] = []
        for tok in toks:
            if WILD not in tok and any(ch.isdigit() for ch in tok):
                tok = WILD
            if tok == WILD and out and out[-1] == WILD:
                continue
            out.append(tok)
        toks = tuple(out)
    return " ".join(toks)


def _has_digit(counts: Counter[str]) -> bool:
    return any(any(ch.isdigit() for ch in v) for v in counts)


def _lead(toks: tuple[str, ...]) -> str:
    """The first token as a grouping key; one holding digits (E512, v2) may vary."""
    if not toks:
        return ""
    first = toks[0]
    return WILD if any(ch.isdigit() for ch in first) else first


def _is_variable(counts: Counter[str], vocab: set[str] | None) -> bool:
    """Does this position (not the first) hold a variable rather than constants?

    Two words at one position are read as two events (``SCREEN_ON`` /
    ``SCREEN_OFF``) unless both are values that variables were seen to take
    elsewhere (user names recur across templates: ``Invalid user X``,
    ``Failed password for X``); three or more are a variable.
    """
    d = len(counts)
    if d > 2:
        return True
    if vocab:
        return all(v in vocab for v in counts)
    return False


def _mine(
    group: list[tuple[str, ...]],
    out: dict[tuple[str, ...], tuple[str, ...]],
    vocab: set[str] | None,
    learn: set[str] | None,
) -> None:
    """Split a group of equal-length token tuples; map each tuple to its template.

    ``learn`` collects values seen at positions judged variable.
    """
    stack = [group]
    while stack:
        g = stack.pop()
        width = len(g[0])
        best: int | None = None
        best_d = 0
        varying: list[int] = []
        for p in range(width):
            counts = Counter(t[p] for t in g)
            if len(counts) == 1:
                continue
            varying.append(p)
            if (p != 0 or _has_digit(counts)) and _is_variable(counts, vocab):
                if learn is not None:
                    learn.update(counts)
            else:
                d = len(counts)
                if best is None or d < best_d or (p == 0 and best != 0):
                    if best == 0:
                        continue
                    best, best_d = p, d
        if best is not None:
            parts: dict[str, list[tuple[str, ...]]] = {}
            for t in g:
                parts.setdefault(t[best], []).append(t)
            stack.extend(parts.values())
            continue
        template = list(g[0])
        for p in varying:
            template[p] = WILD
        tpl = tuple(template)
        for t in g:
            out[t] = tpl


def _collapse(tpl: tuple[str, ...]) -> str:
    out: list[str] = []
    for tok in tpl:
        if tok == WILD and out and out[-1] == WILD:
            continue
        out.append(tok)
    return " ".join(out)


def cluster_messages(messages: Iterable[str]) -> list[str]:
    """The template of each message's group, in input order.

    Messages with the same template belong to the same cluster; the template
    shows the variable parts as ``<*>``::

        >>> cluster_messages(["Invalid user admin from 10.0.0.1",
        ...                   "Invalid user test from 10.0.0.2",
        ...                   "Invalid user oracle from 10.0.0.9"])[0]
        'Invalid user <*> from <*>'
    """
    msgs = list(messages)
    sigs: dict[str, tuple[str, ...]] = {}
    for m in msgs:
        if m not in sigs:
            sigs[m] = _tokens(m)
    by_shape: dict[tuple[int, str], list[tuple[str, ...]]] = {}
    for toks in dict.fromkeys(sigs.values()):
        by_shape.setdefault((len(toks), _lead(toks)), []).append(toks)
    groups = list(by_shape.values())
    vocab: set[str] = set()
    scratch: dict[tuple[str, ...], tuple[str, ...]] = {}
    for g in groups:  # pass 1: learn which values variables take
        _mine(g, scratch, None, vocab)
    vocab = {v for v in vocab if WILD not in v}
    mined: dict[tuple[str, ...], tuple[str, ...]] = {}
    for g in groups:  # pass 2: positions holding those values are variables
        _mine(g, mined, vocab, None)
    return [_collapse(mined[sigs[m]]) for m in msgs]


def grouping_accuracy(predicted: Sequence[str], truth: Sequence[str]) -> float:
    """Share of messages whose predicted group equals their true group exactly.

    The loghub metric: a message counts when the set of messages sharing its
    predicted template is the set sharing its ground-truth id.
    """
    if len(predicted) != len(truth):
        raise ValueError("predicted and truth must have the same length")
    pred_groups: dict[str, set[int]] = {}
    true_groups: dict[str, set[int]] = {}
    for i, (p, t) in enumerate(zip(predicted, truth, strict=True)):
        pred_groups.setdefault(p, set()).add(i)
        true_groups.setdefault(t, set()).add(i)
    correct = 0
    for members in pred_groups.values():
        i = next(iter(members))
        if members == true_groups[truth[i]]:
            correct += len(members)
    return correct / len(truth) if truth else 1.0
