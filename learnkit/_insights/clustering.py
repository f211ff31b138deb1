"""Error clustering: typed masks, then templates learned from value frequencies.

See docs/clustering.md for the method, the leave-one-dataset-out protocol and
the scores. In brief, one default configuration for every kind of message:

1. **Signature** (stateless, used at write time too): ANSI codes stripped;
   tracebacks and pytest reports reduced to ``⟦type @ raising frame⟧
   message`` (see :mod:`._tracebacks`); values that are variable by type
   (URLs, UUIDs, dates and times, IP and MAC addresses, hex, absolute paths,
   numbers) become ``<*>``; the text is split into words and the delimiters
   ``= : , ; ( ) [ ] { } " ' |`` so that a changed value never changes the
   number of tokens; runs of ``<*>`` collapse into one. Quoted strings and
   ``key=`` values are *not* masked: whether they vary is learned.
2. **Mining** (per batch of signatures with their counts): in the style of
   Brain (Yu et al., 2023), messages of one shape are first grouped by the
   words they share at the frequency most of their words have (the words of
   one event occur as often as the event); words more frequent than that are
   shared constants; every other position is split on only when its values
   look like a choice between constants, judged from their counts: a
   position dominated by values seen once is a variable, and an odd value
   out becomes its own group rather than splitting the large one.
3. **Variable-length messages**: templates that differ only in where and how
   many variables they hold (``()`` against ``(<*>)``, one ``<*>`` against
   three) are one event.

:class:`Clusterer` does this incrementally: it keeps weighted patterns and,
when their number passes a budget, replaces each pattern by its template, so
memory follows the number of templates, not of messages.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence

from ._tracebacks import KEY_OPEN, normalise_report, strip_ansi

__all__ = ["Clusterer", "cluster_messages", "grouping_accuracy", "mask", "signature"]

WILD = "<*>"
_MAX_LEN = 2000
#: Rules the benchmark's ablation and leave-one-dataset-out switch off (keep them True).
UNITS = True  # a number with its unit of measure is one value
SKELETON = True  # templates differing only in variables and delimiters are one event
GENERALISE = True  # a constant where a sibling template has <*> is an instance of it
#: A value is rare at a position when it holds at most this share of the messages there.
RARE = 0.1

# A number with its unit of measure is one value ("785 bytes", "1.2 GB", "30s").
_UNITS = (
    r"(?:[KMGTP]i?B|[kmgt]b|bytes?|B|[mun]?s|µs|secs?|seconds?|mins?|minutes?|hrs?|hours?"
    r"|days?|%)"
)
# Typed values, masked in each whitespace-free piece of a message before it is
# split at delimiters. Each pattern refuses to start or end inside a word, and
# none matches text holding "<*>", so masking a signature again changes nothing.


def _typed(units: str) -> re.Pattern[str]:
    return re.compile("|".join([
        r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>()\[\]{}]+",  # URL
        r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b",  # e-mail
        r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b",
        # dates and times: ISO, 12:30:45.123, month-name dates
        r"\b\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?",
        r"(?<![\w:])\d{1,2}:\d{2}:\d{2}(?:[.,]\d+)?(?![\w:])",
        r"(?<![\w.])\d{1,3}(?:\.\d{1,3}){3}(?![\w.])",  # IPv4
        r"(?<![\w:])(?:[0-9a-fA-F]{2}[:-]){5}[0-9a-fA-F]{2}(?![\w:])",  # MAC
        r"(?<![\w:])(?:[0-9a-fA-F]{1,4}:){3,7}[0-9a-fA-F]{1,4}(?![\w:])",  # IPv6
        r"\b0[xX][0-9a-fA-F]+\b",
        r"(?<![\w])(?=[0-9a-fA-F]*\d)(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{8,}(?![\w])",
        r"(?<![\w./])[a-zA-Z]:\\[^\s'\"<>]+",  # Windows path
        r"(?<![\w./<>*])~?/[^\s'\"<>()\[\]{},;=|]+",  # absolute path
        # numbers, not digits at the end of a word (ssh2, storage7)
        rf"(?<![A-Za-z0-9])[-+]?\d+(?:[.,]\d+)*{units}(?![A-Za-z0-9])",
    ]))


_TYPED = _typed(f"(?:{_UNITS})?")
_TYPED_NO_UNITS = _typed("")
_SPLIT_NOSPACE = re.compile(r"[=:,;()\[\]{}\"'|]|[^=:,;()\[\]{}\"'|]+")
_UNIT_WORDS = frozenset(re.findall(r"\S+", (
    "B KB MB GB TB PB KiB MiB GiB TiB kb mb gb bytes byte ms us ns s sec secs second seconds "
    "min mins minute minutes h hr hrs hour hours day days"
)))
_MONTHS = frozenset(re.findall(r"\S+", "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec"))
_piece_cache: dict[str, tuple[str, ...]] = {}
_KEY = re.compile(r"\s*(⟦[^⟧]*⟧)")
_cache: dict[str, tuple[str, ...]] = {}
_CACHE_MAX = 50_000


def _is_wild(tok: str) -> bool:
    return tok == WILD or tok == " " + WILD


def _split_token(raw: str) -> tuple[str, ...]:
    """Mask the typed values of one whitespace-free token, then split it at delimiters."""
    out = _piece_cache.get(raw)
    if out is None:
        typed = _TYPED if UNITS else _TYPED_NO_UNITS
        out = tuple(_SPLIT_NOSPACE.findall(typed.sub(WILD, raw)))
        if len(_piece_cache) >= _CACHE_MAX:
            _piece_cache.clear()
        _piece_cache[raw] = out
    return out


def _tokens(message: str) -> tuple[str, ...]:
    """The masked tokens of one message; a token starts with a space when one preceded it."""
    out = _cache.get(message)
    if out is not None:
        return out
    text = message
    report = normalise_report(text) if "\n" in text or text[:6] in ("FAILED", "ERROR ") else None
    text = report if report is not None else strip_ansi(text[:_MAX_LEN])
    toks: list[str] = []
    km = _KEY.match(text)
    if km:  # a traceback key: one token, never generalised
        toks.append(km.group(1))
        text = text[km.end():]
    prev = ""
    for raw in text.split():
        if raw.isalpha():
            if UNITS and prev.endswith(WILD) and raw in _UNIT_WORDS:
                continue  # "785 bytes": the unit belongs to the number
            if raw in _MONTHS:
                raw = "\x00" + raw  # a month name starts a date when a day follows
            pieces: tuple[str, ...] = (raw,)
        else:
            pieces = _split_token(raw)
            if not pieces:
                continue
            if pieces[0] == WILD and toks and toks[-1].lstrip().startswith("\x00"):
                toks.pop()  # "Jun 14": a date
                prev = WILD if toks and toks[-1].strip() == WILD else ""
        first = True
        for piece in pieces:
            if prev == WILD and piece == WILD:
                continue
            if UNITS and first and prev.endswith(WILD) and piece in _UNIT_WORDS:
                first = False
                continue
            prev = piece
            toks.append(" " + piece if first and toks else piece)
            first = False
    out = tuple(t.replace("\x00", "") for t in toks)
    if len(_cache) >= _CACHE_MAX:
        _cache.clear()
    _cache[message] = out
    return out


def _render(toks: Iterable[str]) -> str:
    return "".join(toks).strip()


def mask(message: str) -> str:
    """The message with its typed values replaced by ``<*>``, whitespace normalised."""
    return _render(_tokens(message))


def signature(message: str, *, coarse: bool = False) -> str:
    """The masked form of one message: its typed values as ``<*>``.

    Equal signatures always fall in the same cluster, and clustering a
    signature gives the same result as clustering the message, so writers
    can store signatures and analysis can mine them later. ``coarse`` is
    accepted for compatibility and changes nothing: write-time signatures and
    analysis clusters use the same masks.
    """
    del coarse
    return _render(_tokens(message))


# ---------------------------------------------------------------------------
# Mining


def _is_variable(counts: Counter[str] | dict[str, int]) -> bool:
    """Is a position holding these values (value -> count) a variable?

    A typed variable (``<*>``) among them makes it one. Two values are read
    as a choice (``ON``/``OFF``): an odd value out then forms its own group
    and leaves the large one whole. With three or more, it is a choice
    between constants when at least two values each hold a real share (seen
    more than once, and in over ``RARE`` of the messages), and a variable when at most one does (a
    scatter of rare values, perhaps beside one frequent value: ``root``
    among user names).
    """
    if any(_is_wild(v) for v in counts):
        return True
    d = len(counts)
    if d < 3:
        return False
    cut = max(1.0, RARE * sum(counts.values()))
    major = sum(1 for c in counts.values() if c > cut)
    return major < 2


def _mine_shape(
    pats: list[tuple[str, ...]], weights: list[int], out: dict[tuple[str, ...], tuple[str, ...]]
) -> None:
    """Templates for patterns of one length (Brain-style initial groups, then splits)."""
    width = len(pats[0])
    freq: list[Counter[str]] = [Counter() for _ in range(width)]
    for p, w in zip(pats, weights, strict=True):
        for i, t in enumerate(p):
            freq[i][t] += w
    groups: dict[tuple[tuple[int, str], ...], list[int]] = {}
    for k, p in enumerate(pats):
        fs = [freq[i][t] for i, t in enumerate(p) if not _is_wild(t)]
        if not fs:
            groups.setdefault((), []).append(k)
            continue
        fc = Counter(fs)
        best = max(fc.items(), key=lambda kv: (kv[1], kv[0]))[0]
        key = tuple((i, t) for i, t in enumerate(p) if freq[i][t] >= best and not _is_wild(t))
        groups.setdefault(key, []).append(k)
    for key, members in groups.items():
        fixed = {i for i, _ in key}
        _split(pats, weights, members, fixed, out)


def _split(
    pats: list[tuple[str, ...]],
    weights: list[int],
    members: list[int],
    fixed: set[int],
    out: dict[tuple[str, ...], tuple[str, ...]],
) -> None:
    width = len(pats[members[0]])
    stack = [members]
    while stack:
        g = stack.pop()
        variable: list[int] = []
        best: int | None = None
        best_d = 0
        for i in range(width):
            if i in fixed:
                continue
            counts: Counter[str] = Counter()
            for k in g:
                counts[pats[k][i]] += weights[k]
            if len(counts) == 1:
                continue
            if _is_variable(counts):
                variable.append(i)
            elif best is None or len(counts) < best_d:
                best, best_d = i, len(counts)
        if best is not None:
            parts: dict[str, list[int]] = {}
            for k in g:
                parts.setdefault(pats[k][best], []).append(k)
            stack.extend(parts.values())
            continue
        tpl = list(pats[g[0]])
        for i in variable:
            tpl[i] = " " + WILD if tpl[i].startswith(" ") else WILD
        t = tuple(tpl)
        for k in g:
            out[pats[k]] = t


def _collapse(tpl: tuple[str, ...]) -> tuple[str, ...]:
    out: list[str] = []
    for tok in tpl:
        if _is_wild(tok) and out and _is_wild(out[-1]):
            continue
        out.append(tok)
    return tuple(out)


_WORD = re.compile(r"[^\W_]")
_DELIMS = frozenset("=:,;()[]{}\"'|")


def _skeleton(tpl: tuple[str, ...]) -> tuple[str, ...]:
    """The constant words of a template: its identity across lengths.

    Variables, and delimiters or tokens holding nothing but a variable
    (``(``, ``<<*>``), are left out, so optional variable fields and
    variable-length lists do not make a new event.
    """
    out = []
    for t in tpl:
        t = t.strip()
        rest = t.replace(WILD, "")
        if _WORD.search(rest) or (rest == t and t not in _DELIMS):
            out.append(t)
    return tuple(out)


def mine(patterns: dict[tuple[str, ...], int]) -> dict[tuple[str, ...], tuple[str, ...]]:
    """Map each weighted token pattern to its template (a token tuple)."""
    by_shape: dict[tuple[str, int], tuple[list[tuple[str, ...]], list[int]]] = {}
    for p, w in patterns.items():
        hard = p[0] if p and p[0].startswith(KEY_OPEN) else ""
        ps, ws = by_shape.setdefault((hard, len(p)), ([], []))
        ps.append(p)
        ws.append(w)
    raw: dict[tuple[str, ...], tuple[str, ...]] = {}
    for ps, ws in by_shape.values():
        _mine_shape(ps, ws, raw)
    # variable-length fields: one template per skeleton
    canon: dict[tuple[str, ...], tuple[str, ...]] = {}
    for tpl in raw.values():
        tpl = _collapse(tpl)
        sk = _skeleton(tpl) if SKELETON else tpl
        have = canon.get(sk)
        if have is None or (len(tpl), tpl) > (len(have), have):
            canon[sk] = tpl
    key = _skeleton if SKELETON else (lambda t: t)
    mass: Counter[tuple[str, ...]] = Counter()
    for p, t in raw.items():
        mass[canon[key(_collapse(t))]] += patterns[p]
    templates = list(canon.values())
    general = _generalise(templates, mass) if GENERALISE else {t: t for t in templates}
    return {p: general[canon[key(_collapse(t))]] for p, t in raw.items()}


def _generalise(
    templates: list[tuple[str, ...]], mass: Counter[tuple[str, ...]]
) -> dict[tuple[str, ...], tuple[str, ...]]:
    """Map each template to the most specific other template it is an instance of.

    A word that is a variable in one template is a variable wherever the
    rest of that template matches: ``for root from <*>`` joins ``for <*>
    from <*>``, provided the general template holds at least as many
    messages (a few odd messages never absorb a well-supported constant).
    Chains resolve to the most general template.
    """
    index: dict[str, list[int]] = {}
    need: list[int] = []
    for k, tpl in enumerate(templates):
        words = set(_skeleton(tpl))
        need.append(len(words))
        for w in words:
            index.setdefault(w, []).append(k)
    target = list(range(len(templates)))
    for k, tpl in enumerate(templates):
        hits: Counter[int] = Counter()
        for w in set(_skeleton(tpl)):
            for j in index.get(w, ()):
                hits[j] += 1
        best = -1
        for j, h in hits.items():
            if j == k or h != need[j] or need[j] >= need[k]:
                continue
            if mass[templates[j]] < mass[tpl]:
                continue
            if (best < 0 or need[j] > need[best]) and _matches(templates[j], tpl):
                best = j
        if best >= 0:
            target[k] = best
    out = {}
    for k, tpl in enumerate(templates):
        j = k
        for _ in range(len(templates)):
            if target[j] == j:
                break
            j = target[j]
        out[tpl] = templates[j]
    return out


def cluster_messages(
    messages: Iterable[str], weights: Iterable[int] | None = None
) -> list[str]:
    """The template of each message's group, in input order.

    Messages with the same template belong to the same cluster; the template
    shows the variable parts as ``<*>``. ``weights`` (optional, one per
    message) counts each message that many times, as when clustering stored
    signatures with their counts::

        >>> cluster_messages(["Invalid user admin from 10.0.0.1",
        ...                   "Invalid user test from 10.0.0.2",
        ...                   "Invalid user oracle from 10.0.0.9"])[0]
        'Invalid user <*> from <*>'
    """
    msgs = list(messages)
    ws = [1] * len(msgs) if weights is None else [int(w) for w in weights]
    if len(ws) != len(msgs):
        raise ValueError("weights must have one entry per message")
    toks = [_tokens(m) for m in msgs]
    patterns: dict[tuple[str, ...], int] = {}
    for t, w in zip(toks, ws, strict=True):
        patterns[t] = patterns.get(t, 0) + max(w, 1)
    tpl = mine(patterns)
    rendered: dict[tuple[str, ...], str] = {}
    out = []
    for t in toks:
        s = rendered.get(t)
        if s is None:
            s = rendered[t] = _render(tpl[t])
        out.append(s)
    return out


class Clusterer:
    """Incremental clustering with memory bounded by the number of templates.

    ``add`` counts a message under its signature; when more than ``budget``
    patterns are held, they are mined and each is replaced by its template
    (patterns of one template merge, their counts summed). ``template``
    gives a message's current template.
    """

    def __init__(self, budget: int = 4096) -> None:
        self.budget = budget
        self._patterns: dict[tuple[str, ...], int] = {}
        self._templates: dict[tuple[str, ...], tuple[str, ...]] = {}
        self._dirty = False

    def __len__(self) -> int:
        return len(self._patterns)

    def add(self, message: str, count: int = 1) -> str:
        """Count one message; return its signature (what a writer stores)."""
        t = _tokens(message)
        self._patterns[t] = self._patterns.get(t, 0) + count
        self._dirty = True
        if len(self._patterns) > self.budget:
            self._compact()
        return _render(t)

    def _compact(self) -> None:
        tpl = mine(self._patterns)
        merged: dict[tuple[str, ...], int] = {}
        for p, w in self._patterns.items():
            t = tpl[p]
            merged[t] = merged.get(t, 0) + w
        self._patterns = merged
        # keep the budget ahead of the number of templates
        self.budget = max(self.budget, 2 * len(merged))
        self._dirty = True

    def templates(self) -> dict[str, int]:
        """Current templates with their message counts."""
        self._refresh()
        out: dict[str, int] = {}
        for p, w in self._patterns.items():
            s = _render(self._templates[p])
            out[s] = out.get(s, 0) + w
        return out

    def _refresh(self) -> None:
        if self._dirty:
            self._templates = mine(self._patterns)
            self._dirty = False

    def template(self, message: str) -> str:
        """The template of a message under the patterns seen so far."""
        self._refresh()
        t = _tokens(message)
        got = self._templates.get(t)
        if got is not None:
            return _render(got)
        for tpl in self._templates.values():
            if _matches(tpl, t):
                return _render(tpl)
        return _render(t)


def _wordless(tok: str) -> bool:
    return not _WORD.search(tok.replace(WILD, ""))


def _units(tpl: tuple[str, ...]) -> list[tuple[str, ...]]:
    """A template's tokens, each maximal run of wordless tokens holding a variable one unit."""
    out: list[tuple[str, ...]] = []
    run: list[str] = []
    for t in tpl:
        t = t.strip()
        if _wordless(t):
            run.append(t)
            continue
        if run:
            out.extend([tuple(run)] if any(WILD in r for r in run) else [(r,) for r in run])
            run = []
        out.append((t,))
    if run:
        out.extend([tuple(run)] if any(WILD in r for r in run) else [(r,) for r in run])
    return out


def _matches(tpl: tuple[str, ...], toks: tuple[str, ...]) -> bool:
    """Is ``toks`` an instance of ``tpl``?

    Words and delimiters of the template match equal tokens. A run of
    variables and delimiters in the template matches any run of variables
    and delimiters (or none: an optional variable part), or, token by token,
    a span of the same length where each ``<*>`` stands for one token.
    """
    units = _units(tpl)
    b = [t.strip() for t in toks]
    m = len(b)
    free = [_wordless(t) for t in b]
    reach = {0}
    for u in units:
        nxt: set[int] = set()
        var = len(u) > 1 or WILD in u[0]
        for j in reach:
            if not var:
                if j < m and b[j] == u[0]:
                    nxt.add(j + 1)
                continue
            nxt.add(j)
            k = j
            while k < m and free[k]:
                k += 1
                nxt.add(k)
            n = len(u)
            if j + n <= m and all(x in (WILD, y) for x, y in zip(u, b[j:j + n], strict=True)):
                nxt.add(j + n)
        if not nxt:
            return False
        reach = nxt
    return m in reach


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
