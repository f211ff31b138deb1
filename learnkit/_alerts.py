"""Alerts: tell webhooks (plain JSON or Slack) when the learning loop saw something change.

Two halves:

- :func:`detect` turns one :class:`~learnkit._thresholds.loop.LearningReport`
  and the threshold history into :class:`AlertEvent` values: a new or
  fast-growing error cluster, a change point in a success rate, a threshold
  change, a rollback, a recommendation at or above the confidence threshold.
- :class:`Alerts` remembers what was sent (in the store's ``meta`` table, so
  a restart or another process does not send it again), and hands each
  target its events. Each target has its own delivery task: events that
  arrive within ``min_interval`` of the last message are batched into the
  next one; a failed request is retried with exponential backoff; a target
  that keeps failing is logged and counted, and nothing is ever raised into
  the caller (the learning loop, and through it user code).

HTTP is the standard library's ``urllib`` run in a worker thread: one POST
every ``min_interval`` per target needs no connection pool, and learnkit
gains no dependency. URLs may hold secrets (a Slack webhook URL is one), so
they come from environment variables and are never logged: every message
names the target and its :func:`redact`-ed URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import attrs

from ._config import AlertsConfig, AlertTargetConfig
from ._model import DAY
from ._views.format import json_safe

if TYPE_CHECKING:
    from ._database import Database
    from ._thresholds.controller import ThresholdChange
    from ._thresholds.loop import LearningReport

__all__ = ["AlertEvent", "Alerts", "DeliveryStats", "detect", "payload", "redact", "sample"]

log = logging.getLogger("learnkit")

#: Meta key of the events already sent: JSON {event key: Unix time sent}.
SENT_KEY = "alerts_sent"
#: Most event keys remembered; the oldest are forgotten first.
MAX_REMEMBERED = 2000
#: Longest wait between two attempts, whatever ``backoff`` and ``Retry-After`` say.
MAX_BACKOFF = 300.0
#: Consecutive failed messages after which a target is reported as failing (once).
FAILING_AFTER = 3

#: ``post(url, body, timeout) -> (status, Retry-After seconds or None)``; raises OSError.
Poster = Callable[[str, bytes, float], tuple[int, float | None]]


@attrs.frozen
class AlertEvent:
    """One thing worth telling someone."""

    #: One of ``new_cluster``, ``growing_cluster``, ``change_point``,
    #: ``threshold_change``, ``rollback``, ``recommendation``.
    kind: str
    #: What makes it the same event next time (the dedupe key).
    key: str
    #: One line.
    title: str
    #: A sentence or two with the numbers.
    text: str
    #: When it happened (Unix seconds).
    at: float
    #: The facts, as plain JSON data.
    data: dict[str, Any] = attrs.Factory(dict)


# -- detection --------------------------------------------------------------------------


def _day(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d")


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.0f}%"




def detect(
    report: LearningReport, history: Sequence[ThresholdChange], *, now: float,
    confidence: float, min_cluster_size: int, lookback: float,
) -> list[AlertEvent]:
    """The events in one turn of the learning loop.

    Args:
        report: what the turn found and did.
        history: the recorded threshold changes (every process's, and by hand).
        now: the kit's clock.
        confidence: ``learning.confidence_threshold``.
        min_cluster_size: fewest failures of a new cluster worth telling.
        lookback: seconds back in ``history`` to look for changes (older ones
            were reported by an earlier turn, or predate alerts).
    """
    s = report.summary
    out: list[AlertEvent] = []
    for c in s["error_clusters"]:
        data = {"id": c.id, "error_type": c.error_type, "template": c.template,
                "count": c.count, "previous_count": c.previous_count,
                "op_types": c.op_types, "example": c.example, "first_seen": c.first_seen,
                "last_seen": c.last_seen, "confidence": c.confidence, "trend": c.trend}
        types = ", ".join(sorted(c.op_types))
        if c.trend == "new" and c.count >= min_cluster_size:
            out.append(AlertEvent(
                "new_cluster", f"new_cluster:{c.id}",
                f"New error cluster in {types}: {c.error_type}",
                f"{c.count} failures since {_day(c.first_seen)} of `{c.template}` "
                f"(none in the {s['days']:g} days before). Example: {c.example}",
                c.first_seen, json_safe(data)))
        elif c.trend == "growing" and c.confidence >= confidence:
            out.append(AlertEvent(
                "growing_cluster", f"growing_cluster:{c.id}",
                f"Error cluster growing in {types}: {c.error_type}",
                f"{c.count} failures of `{c.template}` in the last {s['days']:g} days against "
                f"{c.previous_count} in the {s['days']:g} days before (confidence "
                f"{c.confidence:.2f}). Example: {c.example}",
                c.last_seen, json_safe(data)))
    for p in s["failure_patterns"]:
        if p.kind != "change_point" or p.at is None:
            continue
        out.append(AlertEvent(
            "change_point", f"change_point:{p.op_type}:{int(p.at)}",
            f"Success rate of {p.op_type} changed on {_day(p.at)}",
            f"{p.description} ({_pct(p.rate_before)} before, {_pct(p.rate_after)} after; "
            f"confidence {p.confidence or 0:.2f})",
            p.at, json_safe({"op_type": p.op_type, "at": p.at, "rate_before": p.rate_before,
                          "rate_after": p.rate_after, "confidence": p.confidence,
                          "description": p.description})))
    for ch in history:
        if ch.at < now - lookback:
            continue
        kind = "rollback" if ch.kind == "rollback" else "threshold_change"
        verb = "rolled back" if kind == "rollback" else f"changed ({ch.kind})"
        out.append(AlertEvent(
            kind, f"change:{ch.id}",
            f"Threshold {ch.name} {verb}: {ch.old_value} -> {ch.new_value}",
            ch.reason or f"{ch.name} is now {ch.new_value}",
            ch.at, json_safe({"id": ch.id, "name": ch.name, "old_value": ch.old_value,
                           "new_value": ch.new_value, "kind": ch.kind,
                           "confidence": ch.confidence, "samples": ch.samples})))
    for r in s["recommendations"]:
        if r.confidence < confidence:
            continue
        out.append(AlertEvent(
            "recommendation", f"recommendation:{r.action}:{r.recommended}",
            f"Recommendation: {r.action}",
            str(r), now, json_safe({"action": r.action, "message": r.message,
                                 "confidence": r.confidence, "threshold": r.threshold,
                                 "current": r.current, "recommended": r.recommended,
                                 "expected": r.expected})))
    return out


def sample(now: float | None = None) -> AlertEvent:
    """The event ``learnkit alerts test`` sends."""
    t = time.time() if now is None else now
    return AlertEvent("test", f"test:{t}", "learnkit test alert",
                      "If you can read this, the webhook works.", t, {"test": True})


# -- payloads ----------------------------------------------------------------------------


def _slack(text: str) -> str:
    """Recorded text as Slack shows it, never as a control sequence: ``&``, ``<`` and
    ``>`` escaped as Slack asks, so an error message holding ``<!channel>`` or
    ``<https://x|click>`` neither pings anyone nor becomes a link; and a zero-width
    space after ``@``, so that ``@channel`` or ``@here`` in it does not notify a
    channel on the services that take this format and read plain mentions
    (Mattermost, Rocket.Chat)."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text.replace("@", "@\u200b")


def payload(fmt: str, events: Sequence[AlertEvent], *, more: int = 0,
            source: str = "") -> dict[str, Any]:
    """The body sent to a target: learnkit's JSON, or a Slack message.

    ``json``: ``{"source": "learnkit", "version": 1, "config": ..., "events":
    [{kind, key, title, text, at, data}], "more": n}``. ``slack``: ``{"text":
    ...}`` with one line per event, which Slack incoming webhooks (and
    Mattermost, Rocket.Chat, Discord's ``/slack`` endpoint) accept.
    """
    if fmt == "slack":
        lines = [f"*learnkit* ({_slack(source)})" if source else "*learnkit*"]
        for e in events:
            lines.append(f"• *{_slack(e.title)}*\n  {_slack(e.text)}")
        if more:
            lines.append(f"… and {more} more")
        return {"text": "\n".join(lines)}
    return {
        "source": "learnkit",
        "version": 1,
        "config": source,
        "events": [{"kind": e.kind, "key": e.key, "title": e.title, "text": e.text,
                    "at": e.at, "data": e.data} for e in events],
        "more": more,
    }


def redact(url: str) -> str:
    """``https://hooks.slack.com/services/T/B/secret`` -> ``https://hooks.slack.com/***``."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "***"
    return f"{parts.scheme or '?'}://{host}{port}/***"


def _post(url: str, body: bytes, timeout: float) -> tuple[int, float | None]:
    """POST JSON with urllib; (status, Retry-After seconds or None). Raises OSError."""
    req = urllib.request.Request(
        url, data=body, method="POST",
        headers={"Content-Type": "application/json", "User-Agent": "learnkit-alerts"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            resp.read()
            return int(resp.status), None
    except urllib.error.HTTPError as exc:
        retry_after: float | None = None
        header = exc.headers.get("Retry-After") if exc.headers else None
        if header:
            with contextlib.suppress(ValueError):
                retry_after = float(header)
        exc.close()
        return int(exc.code), retry_after


# -- delivery ----------------------------------------------------------------------------


@attrs.define
class DeliveryStats:
    """Counters of one target (``kit.alerts.stats()``)."""

    #: Messages delivered (2xx).
    sent: int = 0
    #: Events in delivered messages.
    events_sent: int = 0
    #: Attempts that failed (each retry counts).
    failed_attempts: int = 0
    #: Messages given up after every retry.
    given_up: int = 0
    #: Events in given-up messages.
    events_lost: int = 0
    #: Messages in a row that were given up (0 after a delivery).
    failing: int = 0
    #: The last problem, with the URL redacted.
    last_error: str | None = None


class _Target:
    """One webhook: its queue, its delivery task, its counters."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.queue: list[AlertEvent] = []
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.last_sent = -math.inf
        self.stats = DeliveryStats()
        self.idle = asyncio.Event()
        self.idle.set()


def _retryable(status: int) -> bool:
    return status in (408, 425, 429) or status >= 500


class Alerts:
    """Sends alert events to the ``[alerts.targets]`` webhooks; ``kit.alerts``.

    Built by the kit and called by the learning loop after each analysis
    (:meth:`observe`); also usable alone (``learnkit alerts test``) with
    ``database=None``, which sends without remembering.
    """

    def __init__(
        self,
        config: Callable[[], AlertsConfig],
        *,
        database: Database | None = None,
        history: Callable[[], Awaitable[Sequence[ThresholdChange]]] | None = None,
        source: str = "",
        environ: Mapping[str, str] | None = None,
        post: Poster | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        self._config = config
        self._db = database
        self._history = history
        self._source = source
        self._environ = os.environ if environ is None else environ
        self._post = post or _post
        self._sleep = sleep or asyncio.sleep
        self._targets: dict[str, _Target] = {}
        self._closing = False
        #: Analyses whose alerts could not be worked out (logged).
        self.errors = 0

    # -- what the loop calls -------------------------------------------------------------

    async def observe(self, report: LearningReport) -> list[AlertEvent]:
        """Work out this turn's events, drop those already sent, queue the rest.

        Returns the events queued. Never raises (a fault is logged and counted).
        """
        try:
            return await self._observe(report)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # alerts must never break the loop or user code
            self.errors += 1
            log.error("learnkit: alerts: could not work out this analysis's alerts: %s: %s",
                      type(exc).__name__, exc)
            return []

    async def _observe(self, report: LearningReport) -> list[AlertEvent]:
        ac = self._config()
        if not ac.enabled or not ac.targets or self._db is None:
            return []
        db = self._db
        lc = db.config.learning
        now = db.now()
        history = await self._history() if self._history is not None else []
        events = detect(report, history, now=now, confidence=lc.confidence_threshold,
                        min_cluster_size=ac.min_cluster_size or lc.min_samples,
                        lookback=min(2 * lc.analysis_interval, ac.repeat_after or DAY))
        fresh = await self._remember(events, now, ac.repeat_after)
        if fresh:
            self.publish(fresh)
        return fresh

    async def _remember(
        self, events: list[AlertEvent], now: float, repeat_after: float
    ) -> list[AlertEvent]:
        """Keep the events not sent within ``repeat_after``; mark them sent (compare-and-swap)."""
        assert self._db is not None
        store = self._db.store
        for _ in range(5):
            old = await store.meta_get(SENT_KEY)
            try:
                sent: dict[str, float] = json.loads(old) if old else {}
                if not isinstance(sent, dict):
                    sent = {}
            except ValueError:
                sent = {}
            sent = {k: t for k, t in sent.items()
                    if isinstance(t, (int, float)) and t > now - repeat_after}
            fresh = list({e.key: e for e in events if e.key not in sent}.values())
            if not fresh:
                return []
            for e in fresh:
                sent[e.key] = now
            if len(sent) > MAX_REMEMBERED:
                keep = sorted(sent.items(), key=lambda kv: kv[1])[-MAX_REMEMBERED:]
                sent = dict(keep)
            if await store.meta_swap(SENT_KEY, old, json.dumps(sent, sort_keys=True)):
                return fresh
        log.warning("learnkit: alerts: the record of sent alerts kept changing; skipped")
        return []

    # -- delivery ------------------------------------------------------------------------

    def publish(self, events: Sequence[AlertEvent]) -> None:
        """Queue ``events`` for every target that wants their kind. Never raises, never blocks."""
        ac = self._config()
        if self._closing:
            return
        for name, tc in ac.targets.items():
            wanted = [e for e in events if e.kind == "test" or e.kind in tc.events]
            if not wanted:
                continue
            t = self._targets.get(name)
            if t is None:
                t = self._targets[name] = _Target(name)
            t.queue.extend(wanted)
            t.idle.clear()
            t.wake.set()
            if t.task is None or t.task.done():
                t.task = asyncio.get_running_loop().create_task(
                    self._deliver(t), name=f"learnkit-alerts-{name}")

    def stats(self) -> dict[str, DeliveryStats]:
        """Counters per target that has been sent anything."""
        return {name: t.stats for name, t in self._targets.items()}

    def _url(self, name: str, tc: AlertTargetConfig) -> str | None:
        if tc.url:
            return tc.url
        url = self._environ.get(tc.url_env, "")
        if not url:
            return None
        if not url.startswith(("http://", "https://")):
            return None
        return url

    async def _deliver(self, t: _Target) -> None:
        """The target's task: batch, wait out the rate limit, send with retries."""
        try:
            while t.queue:
                ac = self._config()
                tc = ac.targets.get(t.name)
                if tc is None:  # removed from the config meanwhile
                    t.queue.clear()
                    break
                if not self._closing:
                    wait = t.last_sent + ac.min_interval - time.monotonic()
                    if wait > 0:
                        t.wake.clear()
                        with contextlib.suppress(TimeoutError):
                            # woken early only by close(), which sends at once
                            await asyncio.wait_for(self._closed_event(t), wait)
                batch, t.queue = t.queue, []
                shown, more = batch[: ac.max_events], max(0, len(batch) - ac.max_events)
                body = json.dumps(payload(tc.format, shown, more=more, source=self._source),
                                  default=str).encode()
                ok = await self._send(t, tc, ac, body)
                t.last_sent = time.monotonic()
                if ok:
                    t.stats.sent += 1
                    t.stats.events_sent += len(batch)
                    if t.stats.failing >= FAILING_AFTER:
                        log.warning("learnkit: alerts: target %r delivers again", t.name)
                    t.stats.failing = 0
                else:
                    t.stats.given_up += 1
                    t.stats.events_lost += len(batch)
                    t.stats.failing += 1
                    log.error("learnkit: alerts: gave up a message of %d event(s) to %r: %s",
                              len(batch), t.name, t.stats.last_error)
                    if t.stats.failing == FAILING_AFTER:
                        log.error("learnkit: alerts: target %r keeps failing (%d messages in "
                                  "a row given up); check it with `learnkit alerts test`",
                                  t.name, t.stats.failing)
        except asyncio.CancelledError:
            t.stats.events_lost += len(t.queue)
            t.queue.clear()
            raise
        except Exception as exc:  # a bug here must not surface in the user's loop
            t.stats.last_error = f"{type(exc).__name__}: {exc}"
            log.exception("learnkit: alerts: delivery to %r failed", t.name)
        finally:
            if not t.queue:
                t.idle.set()

    async def _closed_event(self, t: _Target) -> None:
        while not self._closing:
            await t.wake.wait()
            t.wake.clear()

    async def _send(
        self, t: _Target, tc: AlertTargetConfig, ac: AlertsConfig, body: bytes
    ) -> bool:
        url = self._url(t.name, tc)
        if url is None:
            t.stats.last_error = (f"environment variable {tc.url_env} is not set to an http(s) "
                                  "URL")
            t.stats.failed_attempts += 1
            return False
        where = redact(url)
        delay = ac.backoff
        for attempt in range(ac.retries + 1):
            retry_after: float | None = None
            try:
                status, retry_after = await asyncio.to_thread(self._post, url, body, tc.timeout)
                if 200 <= status < 300:
                    return True
                problem = f"HTTP {status} from {where}"
                retry = _retryable(status)
            except (OSError, ValueError) as exc:  # URLError, timeouts, refused connections
                text = str(getattr(exc, "reason", exc)).replace(url, where)
                problem = f"{type(exc).__name__} posting to {where}: {text}"
                retry = True
            t.stats.failed_attempts += 1
            t.stats.last_error = problem
            if not retry or attempt == ac.retries or self._closing:
                break
            log.warning("learnkit: alerts: %s (target %r); retry %d of %d in %.1f s", problem,
                        t.name, attempt + 1, ac.retries, delay)
            await self._sleep(min(MAX_BACKOFF, max(delay, retry_after or 0.0)))
            delay = min(MAX_BACKOFF, delay * 2)
        return False

    async def drain(self, timeout: float | None = None) -> bool:
        """Wait until every queued event was delivered or given up; True if all settled."""
        waits = [t.idle.wait() for t in self._targets.values()]
        if not waits:
            return True
        try:
            await asyncio.wait_for(asyncio.gather(*waits), timeout)
        except TimeoutError:
            return False
        return True

    async def aclose(self, timeout: float = 10.0) -> None:
        """Send what is queued now (no rate limit, no retry waits), then stop. Bounded."""
        self._closing = True
        for t in self._targets.values():
            t.wake.set()
        if not await self.drain(timeout):
            log.error("learnkit: alerts: closing before every alert was sent")
        for t in self._targets.values():
            if t.task is not None and not t.task.done():
                t.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await t.task

