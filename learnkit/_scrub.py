"""Scrubbing credentials out of records before they are stored.

Applied by the writer to every operation before it is turned into rows, so
nothing that looks like a secret reaches the database, and so neither the
report, the JSON insights nor an export can show it. What is replaced:

- context values whose key names a credential (``password``, ``passwd``,
  ``pwd``, ``token``, ``secret``, ``api_key``/``apikey``, ``auth``,
  ``authorization``, ``cookie``, ``credential``, ``private_key``, ``session_id``),
  unless the key is listed in ``[privacy] safe_keys``;
- in messages, keys and string context values: ``key=value`` / ``key: value``
  pairs with such a key, ``Bearer``/``Basic``/``Token`` credentials, JWTs,
  PEM private-key blocks, passwords in URLs (``scheme://user:pw@host``), AWS
  access key ids and secret keys, GitHub, GitLab, Slack, Google, Stripe and
  OpenAI-style keys, and every pattern in ``[privacy] patterns``.

Each becomes ``[REDACTED]``. The rules are heuristics: they catch the
well-known shapes, not every secret; a secret in a free-form message that
looks like ordinary text is not recognised.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from ._model import Operation

__all__ = ["DEFAULT_PATTERNS", "REDACTED", "Scrubber"]

REDACTED = "[REDACTED]"

_KEY_WORDS = (
    r"(?:password|passwd|pwd|secret|token(?!s)|api[_-]?key|apikey|auth(?!or)"
    r"|authorization|cookie|credentials?|private[_-]?key|access[_-]?key|session[_-]?id)"
)

#: The built-in patterns: (regex, replacement). Replacements keep what names the secret.
DEFAULT_PATTERNS: tuple[tuple[str, str], ...] = (
    (r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY( BLOCK)?-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY"
     r"( BLOCK)?-----|\Z)", REDACTED),
    (r"\b(Bearer|Basic|Token|Digest)\s+[A-Za-z0-9\-._~+/]{8,}=*", r"\1 " + REDACTED),
    (r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*", REDACTED),
    (r"\b([a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@]*):[^/\s@]+@", r"\1:" + REDACTED + "@"),
    (r"(?i:(" + _KEY_WORDS + r"[a-z0-9_.-]*[\"']?\s*[=:]\s*)(\"[^\"]*\"|'[^']*'|[^\s,;&]+))",
     r"\1" + REDACTED),
    (r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA)[0-9A-Z]{16}\b", REDACTED),
    (r"\bgh[pousr]_[A-Za-z0-9]{30,}\b|\bgithub_pat_[A-Za-z0-9_]{20,}\b", REDACTED),
    (r"\bglpat-[A-Za-z0-9_-]{20,}\b", REDACTED),
    (r"\bxox[abposr]-[A-Za-z0-9-]{10,}\b", REDACTED),
    (r"\bAIza[0-9A-Za-z_-]{35}\b", REDACTED),
    (r"\b[sr]k_(?:live|test)_[0-9a-zA-Z]{20,}\b", REDACTED),
    (r"\bsk-[A-Za-z0-9_-]{20,}\b", REDACTED),
)

# Lower-case substrings without which each built-in pattern cannot match: a few
# substring tests skip the regular expressions for ordinary messages.
_HINTS: tuple[tuple[str, ...], ...] = (
    ("private key",),
    ("bearer", "basic", "token", "digest"),
    ("eyj",),
    ("://",),
    ("pass", "pwd", "secret", "token", "key", "auth", "cookie", "credential", "session"),
    ("akia", "asia", "agpa", "aida", "aroa", "anpa"),
    ("gh", "github_pat_"),
    ("glpat-",),
    ("xox",),
    ("aiza",),
    ("k_live_", "k_test_"),
    ("sk-",),
)
assert len(_HINTS) == len(DEFAULT_PATTERNS)

_SENSITIVE_KEY = re.compile(r"(?i)" + _KEY_WORDS)
_CACHE_LIMIT = 4096


class Scrubber:
    """Replaces credentials in operations, in place. One per kit.

    Args:
        enabled: False turns scrubbing off entirely.
        patterns: extra regular expressions; each match becomes ``[REDACTED]``.
        safe_keys: context keys never treated as credentials (``max_tokens``).
    """

    def __init__(
        self, *, enabled: bool = True, patterns: Iterable[str] = (),
        safe_keys: Iterable[str] = (),
    ) -> None:
        self.enabled = enabled
        extra = [(p, REDACTED, ()) for p in patterns]
        self._rules = [
            (re.compile(p, re.DOTALL), r, hints)
            for p, r, hints in [*((p, r, h) for (p, r), h in zip(
                DEFAULT_PATTERNS, _HINTS, strict=True)), *extra]
        ]
        self._texts: dict[str, str] = {}
        # One pass over the lower-cased text finds whether any built-in rule may match.
        self._hinted = re.compile("|".join(re.escape(h) for hs in _HINTS for h in hs))
        self._always = bool(extra)
        self._safe = frozenset(k.lower() for k in safe_keys)
        self._key_verdicts: dict[str, bool] = {}
        #: Values replaced so far.
        self.redacted = 0

    def sensitive_key(self, key: str) -> bool:
        """True when a context value under ``key`` is treated as a credential."""
        verdict = self._key_verdicts.get(key)
        if verdict is None:
            verdict = key.lower() not in self._safe and bool(_SENSITIVE_KEY.search(key))
            if len(self._key_verdicts) >= _CACHE_LIMIT:
                self._key_verdicts.clear()
            self._key_verdicts[key] = verdict
        return verdict

    def text(self, s: str) -> str:
        """``s`` with every credential-looking part replaced."""
        done = self._texts.get(s)
        if done is not None:
            return done
        low = s.lower()
        if not self._always and not self._hinted.search(low):
            return s
        out = s
        for rx, repl, hints in self._rules:
            if not hints or any(h in low for h in hints):
                out = rx.sub(repl, out)
        if out != s:
            self.redacted += 1
        if len(s) <= 2000:
            if len(self._texts) >= _CACHE_LIMIT:
                self._texts.clear()
            self._texts[s] = out
        return out

    def value(self, v: Any) -> Any:
        if type(v) is str:
            return self.text(v)
        if type(v) is list:
            return [self.value(x) for x in v]
        if type(v) is dict:
            return {k: REDACTED if self.sensitive_key(k) else self.value(x) for k, x in v.items()}
        return v

    def operation(self, op: Operation) -> None:
        """Scrub one operation's message, key and context in place."""
        if not self.enabled:
            return
        if op.error_message:
            op.error_message = self.text(op.error_message)
        if op.key:
            op.key = self.text(op.key)
        ctx = op.context
        if ctx:
            for k, v in ctx.items():
                if self.sensitive_key(k):
                    if v != REDACTED:
                        ctx[k] = REDACTED
                        self.redacted += 1
                elif type(v) is not int and type(v) is not float and v is not None \
                        and type(v) is not bool:
                    ctx[k] = self.value(v)
