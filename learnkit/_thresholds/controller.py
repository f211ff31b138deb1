"""The adaptive-threshold controller: apply, measure, keep or undo.

It moves a threshold only on a recommendation that clears ``min_samples``
and ``confidence_threshold``, one ``step`` at a time inside ``[min, max]``,
after a cooldown of ``min_samples`` new outcomes, by rewriting learnkit.toml
(see :mod:`learnkit._configfile`). Every change is recorded in the store.
Every day it judges the latest change of each threshold on the outcomes of
the band the change moved, since the change (explored work in a band it
refused, admitted work in a band it admitted), with a mixture sequential
probability ratio test against break-even, which stays valid however often it
is looked at. A change shown to be on the wrong side is rolled back; overall
utility before and after is reported beside it, never a reason for an undo.
It also sets how much of the band next to each threshold is explored
(Thompson sampling on the band's recent explored outcomes, bounded by its
neighbours' under the premise that success is monotone in the attribute).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import math
from collections.abc import Callable, Generator, Mapping
from typing import TYPE_CHECKING, Any

import anyio
import attrs

from .._config import load_config
from .._errors import (
    ConcurrentEditError,
    ConfigNotWritableError,
    LearnkitError,
    UnknownThresholdError,
)
from .._insights.advice import RELATED_P
from .._insights.patterns import Summary
from .._model import DAY
from .admission import steps_beyond
from .rewrite import lock_file, rewrite_threshold, unlock_file

if TYPE_CHECKING:
    from .._config import Config, ThresholdConfig
    from .._database import Database

__all__ = ["ManualUpdate", "ThresholdChange", "ThresholdController", "Verdict"]

log = logging.getLogger("learnkit")

#: Meta key (+ threshold name): when the controller first saw a threshold that has
#: no recorded change, the start of its outcomes' stream (see ``stream_p``).
ANCHOR = "threshold_anchor:"
#: Most weekly restarts ``stream_p`` tests (the newest ones).
MAX_STREAMS = 12
#: The level a move that shows no trend since the last change must reach on the
#: band's own outcomes since then (``stream_p``): at most this chance, per
#: threshold and direction over its whole life, of moving when the band sits at
#: break-even. At 0.01 the benchmark's noise world still moved once in 20 runs
#: (a week of 6 successes in 36 at 50%, p = 0.0068 on the newest stream).
STREAM_P = 0.001


@attrs.frozen
class ThresholdChange:
    """One recorded change of a threshold."""

    #: Row id in the store.
    id: int
    #: When (Unix seconds, the kit's clock).
    at: float
    #: The threshold.
    name: str
    #: Value before.
    old_value: float | int | None
    #: Value after.
    new_value: float | int
    #: ``lower``, ``raise``, ``rollback`` or ``manual`` (``kit.config.update``).
    kind: str
    #: Confidence of the recommendation (None for a rollback or a manual change).
    confidence: float | None
    #: Why, in words.
    reason: str
    #: The patterns behind it, as plain data.
    evidence: list[dict[str, Any]]
    #: Operations the decision rested on.
    samples: int | None
    #: ``applied`` or ``rolled_back``.
    status: str
    #: ``improved``, ``inconclusive`` or ``worse`` once measured; None before.
    verdict: str | None
    #: When the verdict was reached.
    verdict_at: float | None


@attrs.frozen
class Verdict:
    """What a change did, measured on the outcomes since."""

    #: The change measured.
    change: ThresholdChange
    #: ``pending`` (too few outcomes yet), ``improved``, ``inconclusive`` or ``worse``.
    verdict: str
    #: P(worse) for ``worse``, P(better) for ``improved``, else the larger of the two.
    confidence: float
    #: ``success_rate``, ``coverage``, ``utility``, ``n`` before the change.
    before: dict[str, float | None]
    #: The same since the change.
    after: dict[str, float | None]
    #: The band the change refused or admitted: ``values``, ``n``, ``success_rate``.
    band: dict[str, Any]
    #: One sentence.
    reason: str
    #: Whether this evaluation rolled the change back.
    rolled_back: bool = False


class ManualUpdate:
    """What ``kit.config.update(...)`` returns: the change is already made.

    Awaiting it waits until the change is recorded in the store and gives the
    recorded changes; not awaiting it is fine (the record lands in the
    background and is durable when the kit closes).
    """

    def __init__(self, recorded: asyncio.Future[list[ThresholdChange]],
                 values: dict[str, int | float]) -> None:
        self._recorded = recorded
        #: The values in force after the call, by threshold name.
        self.values = values

    def __await__(self) -> Generator[Any, None, list[ThresholdChange]]:
        return self._recorded.__await__()

    def __repr__(self) -> str:
        state = "recorded" if self._recorded.done() else "recording"
        return f"<ManualUpdate {self.values!r} {state}>"


def _num(v: float) -> int | float:
    return int(v) if float(v).is_integer() else v


def _evidence(summary_rec: Any) -> list[dict[str, Any]]:
    out = []
    for p in summary_rec.evidence:
        d = attrs.asdict(p)
        out.append({k: v for k, v in d.items() if v is not None and not (
            isinstance(v, float) and not math.isfinite(v))})
    return out


def _change(row: dict[str, Any]) -> ThresholdChange:
    return ThresholdChange(
        id=row["id"], at=row["at"], name=row["name"],
        old_value=None if row["old_value"] is None else _num(row["old_value"]),
        new_value=_num(row["new_value"]), kind=row["kind"], confidence=row["confidence"],
        reason=row["reason"] or "", evidence=json.loads(row["evidence"] or "[]"),
        samples=row["samples"], status=row["status"], verdict=row["verdict"],
        verdict_at=row["verdict_at"],
    )


def _number(text: str) -> float | None:
    """A context value from its JSON text, when it is a number."""
    try:
        v = json.loads(text)
    except ValueError:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v)


def _refused(th: ThresholdConfig, value: float) -> bool:
    return value > th.value if th.limit == "max" else value < th.value


def _signed(u: float | None) -> str:
    return "n/a" if u is None else f"{u:+.2f}"


def _utility(s: int, f: int, k: int, cost: float) -> tuple[float | None, float, int]:
    """Mean utility per offered operation (1, -cost, 0 for refused), its variance, n."""
    n = s + f + k
    if n == 0:
        return None, 0.0, 0
    mean = (s - cost * f) / n
    second = (s + cost * cost * f) / n
    return mean, max(second - mean * mean, 0.0), n


class ThresholdController:
    """Applies threshold recommendations to learnkit.toml; ``kit.controller``."""

    def __init__(
        self,
        database: Database,
        logger: logging.Logger | None = None,
        *,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self._db = database
        self.logger = logger or log
        #: Called after a threshold changed (the kit drops cached analyses).
        self._on_change = on_change or (lambda: None)
        #: Recordings of manual changes not yet awaited (see :meth:`update`).
        self._pending: set[asyncio.Task[list[ThresholdChange]]] = set()
        #: Threshold -> why its last recommended change could not be written
        #: (read-only or immutable learnkit.toml); cleared when one is written.
        self.not_applied: dict[str, str] = {}
        # The lock on learnkit.toml as this process holds it: its fds (the file's,
        # then each new file's), and who holds it. A change holds it from the
        # moment it reads the time until its history record is stored.
        self._lock_fds: list[int] = []
        self._lock_owner: str | None = None  # "controller", "manual" or None
        self._manual_open = 0  # manual changes holding the lock, not yet recorded
        # Thresholds known to have an anchor or a history (both only ever grow).
        self._anchored: set[str] = set()

    # -- reading ------------------------------------------------------------------

    async def history(self, name: str | None = None) -> list[ThresholdChange]:
        """Every recorded change (of ``name``, or all), oldest first."""
        return [_change(r) for r in await self._db.store.changes(name)]

    def _threshold(self, cfg: Config, name: str) -> ThresholdConfig:
        th = cfg.thresholds.get(name)
        if th is None:
            known = ", ".join(sorted(cfg.thresholds)) or "none"
            raise UnknownThresholdError(
                f"no threshold {name!r} in {cfg.path} (defined: {known}); "
                f"add a [thresholds.{name}] table"
            )
        return th

    async def _outcomes(
        self, th: ThresholdConfig, start: float, end: float | None = None
    ) -> dict[str, int]:
        """Outcomes of the operations a threshold judges, in ``[start, end or now)``."""
        end = self._db.now() if end is None else end
        raw = await self._db.store.outcome_counts(start, end, op_type=th.op_type or None)
        out: dict[str, int] = {}
        for (_, o), n in raw.items():
            out[o] = out.get(o, 0) + n
        return out

    # -- writing ------------------------------------------------------------------

    async def _write(self, cfg: Config, name: str, value: int | float) -> Config:
        written = await anyio.to_thread.run_sync(
            rewrite_threshold, cfg.path, name, value, cfg.digest
        )
        self._db.live.set(written)
        return written

    async def _refresh(self) -> None:
        """Re-read the values in force: the file, and a shared store's values."""
        self._db.live.refresh(force=True)
        if self._db.shared is not None:
            await self._db.shared.pull()

    async def _commit_change(
        self, cfg: Config, name: str, value: int | float, row: dict[str, Any],
        *, rolled_back: int | None = None,
    ) -> int:
        """Put ``value`` in force and record ``row``; the change's id.

        With a shared store: one compare-and-set on the threshold's version,
        the record in the same transaction. Otherwise: rewrite learnkit.toml,
        then record.

        Raises:
            ConcurrentEditError: the file, or the shared value, changed since read.
        """
        shared = self._db.shared
        if shared is not None:
            # The file holds this host's policy (bounds, step): never act on a broken one.
            await anyio.to_thread.run_sync(load_config, cfg.path)
            return await shared.swap(name, value, row, rolled_back=rolled_back)
        # One step under the file lock, the time read inside it: the history's
        # order is the file's order, across processes. The lock is taken in a
        # thread; a manual change on the loop meanwhile is told to retry (it
        # cannot block the loop this change needs to finish).
        self._lock_owner = "controller"
        try:
            fds = [await anyio.to_thread.run_sync(lock_file, cfg.path)]
        except BaseException:
            self._lock_owner = None
            raise
        try:
            row["at"] = self._db.now()
            written = await anyio.to_thread.run_sync(
                functools.partial(rewrite_threshold, cfg.path, name, value, cfg.digest,
                                  locked=True, hold=fds))
            self._db.live.set(written)
            if rolled_back is not None:
                await self._db.store.update_change(rolled_back, status="rolled_back")
            return await self._db.store.record_change(row)
        finally:
            self._lock_owner = None
            for fd in fds:
                unlock_file(fd)

    async def apply(self, summary: Summary) -> list[ThresholdChange]:
        """Apply the summary's threshold recommendations that clear every guard rail.

        A recommendation is applied only when its confidence is at least
        ``confidence_threshold``, its evidence rests on at least
        ``min_samples`` operations, the threshold still holds the value it
        was made for, at least ``min_samples`` outcomes came in since the
        last change of that threshold, and the same move was not rolled back
        within the analysis window. The move is clipped to ``step`` and to
        ``[min, max]``. If the file changed since it was read, it is re-read
        and the decision made again.

        Returns:
            The changes made (possibly none).

        Raises:
            ConfigError: learnkit.toml is invalid now; it is left untouched.
        """
        made: list[ThresholdChange] = []
        await self.anchor_all()
        for rec in summary["recommendations"]:
            if rec.threshold is None or rec.recommended is None:
                continue
            change = await self._apply_one(rec)
            if change is not None:
                made.append(change)
        if made:
            self._on_change()
        return made

    async def _apply_one(self, rec: Any) -> ThresholdChange | None:
        db = self._db
        name = rec.threshold
        for _attempt in range(3):
            await self._refresh()
            cfg = db.live.config
            lc = cfg.learning
            th = cfg.thresholds.get(name)
            if th is None:
                self.logger.warning("learnkit: %s is no longer in %s; not applied", name, cfg.path)
                return None
            samples = rec.evidence[0].support if rec.evidence else 0
            why_not = None
            if rec.confidence < lc.confidence_threshold:
                why_not = f"confidence {rec.confidence:.2f} < {lc.confidence_threshold}"
            elif (samples or 0) < lc.min_samples:
                why_not = f"{samples} operations < min_samples {lc.min_samples}"
            elif th.value != rec.current:
                why_not = (f"the value is {th.value} now, not {rec.current} as analysed; "
                           "it will be re-analysed")
            if why_not:
                self.logger.info("learnkit: %s not changed: %s", name, why_not)
                return None
            target = float(rec.recommended)
            lo = -math.inf if th.min is None else th.min
            hi = math.inf if th.max is None else th.max
            step = float(th.step)
            new = min(max(target, th.value - step), th.value + step)
            new = min(max(new, lo), hi)
            new_v = _num(new) if isinstance(th.value, int) or float(new).is_integer() else new
            if new_v == th.value:
                return None
            history = await self.history(name)
            if history:
                last = history[-1]
                got = await self._outcomes(th, last.at)
                fresh = got.get("success", 0) + got.get("failure", 0)
                if fresh < lc.min_samples:
                    self.logger.info(
                        "learnkit: %s not changed: cooling down (%d of %d outcomes since the "
                        "last change)", name, fresh, lc.min_samples)
                    return None
                now = db.now()
                for h in history:
                    if (h.status == "rolled_back" and h.old_value == th.value
                            and h.new_value == new_v
                            and now - h.at < lc.window_days * DAY):
                        self.logger.info(
                            "learnkit: %s not changed: %s -> %s was rolled back on evidence "
                            "that is still in the window", name, th.value, new_v)
                        return None
            kind = "lower" if new_v < th.value else "raise"
            # The window is looked at every day: an analysed move must also hold on
            # the outcomes since the threshold last changed (a stream that only
            # grows). A recommendation made by hand (no related_p) is taken as is.
            tighten = (new_v < th.value) == (th.limit == "max")
            anchor = await self._anchor(name, history)
            rel = 0.0 if rec.related_p is None else await self.related_since(name, anchor)
            if rel > RELATED_P:
                p, n = await self.stream_p(name, tighten=tighten, to=new_v, anchor=anchor)
                if p > STREAM_P:
                    self.logger.info(
                        "learnkit: %s not changed: since its last change %s shows no trend "
                        "(p %.3g) and the band's %d outcomes give p %.3g > %g",
                        name, th.attribute, rel, n, p, STREAM_P)
                    return None
            row = {
                "at": db.now(), "name": name, "old_value": th.value, "new_value": new_v,
                "kind": kind, "confidence": rec.confidence, "reason": rec.message,
                "evidence": json.dumps(_evidence(rec), default=str), "samples": samples,
                "status": "applied",
            }
            try:
                row_id = await self._commit_change(cfg, name, new_v, row)
            except ConcurrentEditError:
                continue  # someone edited the file (or another host moved it): decide again
            except ConfigNotWritableError as e:
                # Reported once per reason; the loop goes on, nothing raised into user code.
                if self.not_applied.get(name) != str(e):
                    self.not_applied[name] = str(e)
                    self.logger.warning("learnkit: %s not changed: %s", name, e)
                return None
            self.not_applied.pop(name, None)
            self.logger.info("learnkit: %s %s -> %s (confidence %.2f): %s",
                             name, th.value, new_v, rec.confidence, rec.message)
            return _change({**row, "id": row_id, "verdict": None, "verdict_at": None})
        self.logger.warning("learnkit: %s not changed: the file kept changing under us", name)
        return None

    async def rollback(self, name: str, *, reason: str = "rolled back by hand") -> ThresholdChange:
        """Undo the last applied change of ``name``, restoring its old value.

        Raises:
            UnknownThresholdError: learnkit.toml has no such threshold.
            LearnkitError: there is no applied change to undo.
            ConcurrentEditError: the value was edited since that change; the
                edit is kept.
        """
        db = self._db
        await self._refresh()
        cfg = db.live.config
        th = self._threshold(cfg, name)
        applied = [c for c in await self.history(name)
                   if c.status == "applied" and c.kind in ("lower", "raise")]
        if not applied:
            raise LearnkitError(f"{name} has no applied change to roll back")
        last = applied[-1]
        if th.value != last.new_value:
            raise ConcurrentEditError(
                f"{name} is {th.value} in {cfg.path}, not {last.new_value} as the last change "
                "left it; it was edited since, so the edit is kept"
            )
        assert last.old_value is not None
        row = {
            "at": db.now(), "name": name, "old_value": th.value,
            "new_value": last.old_value, "kind": "rollback", "confidence": None,
            "reason": reason, "evidence": "[]", "samples": None, "status": "applied",
        }
        row_id = await self._commit_change(cfg, name, last.old_value, row, rolled_back=last.id)
        self._on_change()
        self.logger.warning("learnkit: %s rolled back %s -> %s: %s",
                            name, th.value, last.old_value, reason)
        return _change({**row, "id": row_id, "verdict": None, "verdict_at": None})

    # -- changes by hand ------------------------------------------------------------

    def _plan(self, cfg: Config, values: Mapping[str, int | float]) -> dict[str, int | float]:
        """Check every value against bounds and step; the ones that change something."""
        plan: dict[str, int | float] = {}
        for name, value in values.items():
            th = self._threshold(cfg, name)
            if (isinstance(value, bool) or not isinstance(value, (int, float))
                    or not math.isfinite(value)):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
            new = _num(value) if isinstance(th.value, int) else value
            lo = -math.inf if th.min is None else th.min
            hi = math.inf if th.max is None else th.max
            if not lo <= new <= hi:
                raise ValueError(f"{name} = {new} lies outside [min, max] = [{th.min}, {th.max}] "
                                 f"in {cfg.path}; nothing was changed")
            if abs(new - th.value) > th.step * (1 + 1e-9):
                raise ValueError(f"{name} may move at most step = {th.step} at a time, from "
                                 f"{th.value}; {new} is further; nothing was changed")
            if new != th.value:
                plan[name] = new
        return plan

    def update(self, values: Mapping[str, int | float], *,
               reason: str = "set by hand") -> ManualUpdate:
        """Set threshold values by hand (``kit.config.update`` calls this).

        Every value is checked first (``min``, ``max``, ``step``); then each
        is written with :func:`rewrite_threshold`, atomically under the file
        lock and refusing to clobber an edit made since the file was read (it
        is re-read and the values checked again), and put in force before
        this returns. Each change is recorded as kind ``manual``: it starts
        the controller's cooldown like any change, and the controller never
        judges or rolls it back. Await the result for the recorded changes.

        Raises:
            UnknownThresholdError: a name is not a threshold in learnkit.toml.
            ValueError: a value is not a number, or is out of bounds or step.
            ConfigError: learnkit.toml is invalid now; it is left untouched.
            LearnkitError: not called on a running event loop.
        """
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise LearnkitError(
                "kit.config.update must be called on the event loop the kit was opened in"
            ) from None
        db = self._db
        rows: list[dict[str, Any]] = []
        if self._db.shared is None:
            self._hold_for_manual(db.live.config.path)
        try:
            self._write_by_hand(values, reason, rows)
        finally:
            # Whatever was written is recorded, even when a later value failed;
            # the lock is let go once the record is stored.
            if rows:
                self._on_change()
            task = loop.create_task(self._record(rows, manual=self._db.shared is None),
                                    name="learnkit-record-manual-change")
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)
        in_force = {name: db.live.config.thresholds[name].value for name in values}
        return ManualUpdate(task, in_force)

    def _hold_for_manual(self, path: Any) -> None:
        """Hold the config's lock for a manual change, on the loop thread.

        Another manual change not yet recorded already holds it for this
        process: the new one joins it. Another process holds it for a few
        milliseconds at a time: wait, at most 10 s.

        Raises:
            ConcurrentEditError: the learning loop of this kit is changing a
                threshold right now (it needs this loop to finish), or another
                process kept the lock for 10 s.
        """
        if self._lock_owner == "controller":
            raise ConcurrentEditError(
                "the learning loop is changing a threshold in learnkit.toml right now; "
                "call kit.config.update again in a moment")
        if self._lock_owner is None:
            self._lock_fds = [lock_file(path, timeout=10.0)]
            self._lock_owner = "manual"
        self._manual_open += 1

    def _release_manual(self) -> None:
        self._manual_open -= 1
        if self._manual_open == 0 and self._lock_owner == "manual":
            fds, self._lock_fds, self._lock_owner = self._lock_fds, [], None
            for fd in fds:
                unlock_file(fd)

    def _write_by_hand(self, values: Mapping[str, int | float], reason: str,
                       rows: list[dict[str, Any]]) -> None:
        db = self._db
        for _attempt in range(3):
            db.live.refresh(force=True)
            cfg = db.live.config
            plan = self._plan(cfg, values)
            try:
                for name, new in plan.items():
                    old = cfg.thresholds[name].value
                    at = db.now()
                    if db.shared is None:  # under the lock _hold_for_manual took
                        cfg = rewrite_threshold(cfg.path, name, new, cfg.digest, locked=True,
                                                hold=self._lock_fds)
                    else:
                        cfg = rewrite_threshold(cfg.path, name, new, cfg.digest)
                    db.live.set(cfg)
                    rows.append({
                        "at": at, "name": name, "old_value": old, "new_value": new,
                        "kind": "manual", "confidence": None, "reason": reason,
                        "evidence": "[]", "samples": None, "status": "applied",
                    })
                    self.logger.info("learnkit: %s %s -> %s by hand: %s", name, old, new, reason)
            except ConcurrentEditError:
                continue  # edited since it was read: re-read and check again
            return
        raise ConcurrentEditError(
            f"{db.live.config.path} kept changing while updating {', '.join(values)}")

    async def _record(self, rows: list[dict[str, Any]], *,
                      manual: bool = False) -> list[ThresholdChange]:
        out = []
        try:
            for row in rows:
                row_id = await self._db.store.record_change(row)
                out.append(_change({**row, "id": row_id, "verdict": None, "verdict_at": None}))
        finally:
            if manual:
                self._release_manual()
        return out

    async def drain(self) -> None:
        """Wait until every manual change made so far is recorded (the kit does at close)."""
        while self._pending:
            results = await asyncio.gather(*self._pending, return_exceptions=True)
            for r in results:
                if isinstance(r, BaseException) and not isinstance(r, asyncio.CancelledError):
                    self.logger.error("learnkit: a manual threshold change was made but not "
                                      "recorded in the history: %s", r)

    # -- measuring ----------------------------------------------------------------

    async def evaluate(self, *, auto_rollback: bool = True) -> list[Verdict]:
        """Judge the latest change of each threshold; roll back what was shown wrong.

        Needs ``min_samples`` outcomes since the change (else ``pending``) and
        ``min_samples`` in the band the change moved (else ``inconclusive``).
        The band's outcomes since the change form one growing stream, judged
        by a mixture sequential probability ratio test against break-even
        (:func:`~learnkit._insights.statistics.sequential_evidence`): a change
        is *worse* when the band it refused succeeds above break-even when
        explored (for a raise: the band it admitted succeeds below), with
        confidence ``1 - 1/M`` at least ``confidence_threshold``; *improved*
        when the band is shown on the side the change assumed. Verdicts are
        not final: the latest change is judged again every time, so a world
        that changes later is seen. Only *worse* undoes; overall utility
        before and after is reported, never a reason. Only the latest change
        of a threshold is judged: after a rollback (or any later change) the
        earlier ones are not judged again, so one undo never cascades.
        """
        db = self._db
        if db.shared is not None:
            await db.shared.pull()
        await self.anchor_all()  # each stream starts at the first look
        cfg = db.config
        verdicts = []
        for name, th in cfg.thresholds.items():
            history = await self.history(name)
            # Only the latest change is judged; once it is rolled back (or
            # followed by any other change), the ones before it are history.
            last = history[-1] if history else None
            if last is None or last.status != "applied" or last.kind not in ("lower", "raise"):
                continue
            if th.value != last.new_value:
                continue  # edited since: not ours to judge
            v = await self._measure(cfg, th, last)
            if v.verdict != "pending" and v.verdict != last.verdict:
                await db.store.update_change(last.id, verdict=v.verdict, verdict_at=db.now())
            if v.verdict == "worse" and auto_rollback:
                try:
                    await self.rollback(name, reason=f"measured worse: {v.reason}")
                    v = attrs.evolve(v, rolled_back=True)
                except LearnkitError as exc:
                    self.logger.error("learnkit: could not roll back %s: %s", name, exc)
            verdicts.append(v)
        return verdicts

    async def _measure(self, cfg: Config, th: ThresholdConfig, c: ThresholdChange) -> Verdict:
        from .._insights.statistics import sequential_evidence

        db = self._db
        lc = cfg.learning
        cost = lc.failure_cost
        breakeven = cost / (1 + cost)
        now = db.now()
        span = min(now - c.at, lc.window_days * DAY)
        before = await self._outcomes(th, c.at - span, c.at)
        after = await self._outcomes(th, c.at, now)

        def describe(o: dict[str, int]) -> dict[str, float | None]:
            s, f, k = o.get("success", 0), o.get("failure", 0), o.get("skipped", 0)
            u, _, n = _utility(s, f, k, cost)
            return {"success_rate": s / (s + f) if s + f else None,
                    "coverage": (s + f) / n if n else None, "utility": u, "n": float(n)}

        b, a = describe(before), describe(after)
        overall = (f"; overall utility per offered {_signed(b['utility'])} before, "
                   f"{_signed(a['utility'])} since (reported only: the mix of work moves it)")
        band = await self._band(th, c, c.at, now)
        n_after = after.get("success", 0) + after.get("failure", 0)
        if n_after < lc.min_samples:
            return Verdict(c, "pending", 0.0, b, a, band,
                           f"{n_after} of {lc.min_samples} outcomes since the change")
        what = "explored" if c.kind == "lower" else "admitted"
        where = f"{what} work with {th.attribute} in {band['values'] or 'the band'}"
        if band["n"] < lc.min_samples:
            return Verdict(c, "inconclusive", 0.0, b, a, band,
                           f"{band['n']} of {lc.min_samples} outcomes of {where} since the "
                           f"change{overall}")
        s, f = band["successes"], band["failures"]
        m_above = sequential_evidence(s, f, breakeven, "above")
        m_below = sequential_evidence(s, f, breakeven, "below")
        # A lowering assumed the band below break-even; a raise, above.
        m_worse, m_better = (m_above, m_below) if c.kind == "lower" else (m_below, m_above)
        worse, better = 1 - 1 / m_worse, 1 - 1 / m_better
        rate = f"succeeds {band['success_rate']:.0%} (n={band['n']})"
        conf = lc.confidence_threshold
        if worse >= conf:
            side = "above" if c.kind == "lower" else "below"
            return Verdict(c, "worse", worse, b, a, band,
                           f"{where} {rate} since the change, {side} break-even "
                           f"{breakeven:.0%}{overall}")
        if better >= conf:
            side = "below" if c.kind == "lower" else "above"
            return Verdict(c, "improved", better, b, a, band,
                           f"{where} {rate} since the change, {side} break-even "
                           f"{breakeven:.0%}{overall}")
        return Verdict(c, "inconclusive", max(worse, better, 0.0), b, a, band,
                       f"{where} {rate} since the change: not clearly on either side of "
                       f"break-even {breakeven:.0%}{overall}")

    # -- exploring ----------------------------------------------------------------

    async def plan_exploration(self) -> dict[str, tuple[float, float]]:
        """Set how much of the band next to each threshold ``kit.admit`` explores.

        Thompson sampling: explore with the probability that the band succeeds
        above break-even, given its explored outcomes in the last
        ``window_days`` (older evidence is forgotten), a uniform prior, and the
        threshold's own premise that success is monotone in its attribute: the
        band may succeed no more often than the band just inside the limit (all
        its outcomes in the window) and no less often than the band after it
        (its explored outcomes)
        (:func:`~learnkit._insights.statistics.prob_above_ordered`). Only
        exploring borrows from the neighbours; every move and undo is still
        decided on the band's own outcomes. Admission bounds the probability by
        ``explore`` below and :data:`~learnkit._thresholds.admission.NEAR_CAP`
        above. Returns and installs name -> (value in force, probability).
        """
        from .._insights.statistics import prob_above_ordered

        db = self._db
        cfg = db.config
        lc = cfg.learning
        breakeven = lc.failure_cost / (1 + lc.failure_cost)
        now = db.now()
        plan: dict[str, tuple[float, float]] = {}
        for name, th in cfg.thresholds.items():
            counts = await db.store.context_counts(
                now - lc.window_days * DAY, now, th.attribute, th.op_type or None)
            # [successes, failures] in the window: the band just inside the limit
            # (all its outcomes), the band next to it outside (explored), and the
            # one after that (explored).
            inside, near, far = [0, 0], [0, 0], [0, 0]
            for (v, o, x), n in counts.items():
                val = _number(v)
                if val is None or o not in ("success", "failure"):
                    continue
                if not _refused(th, val):
                    gap = th.value - val if th.limit == "max" else val - th.value
                    if gap < th.step * (1 - 1e-9):
                        inside[int(o == "failure")] += n
                    continue
                if not x:
                    continue
                k = steps_beyond(th, val)
                if k == 1:
                    near[int(o == "failure")] += n
                elif k == 2:
                    far[int(o == "failure")] += n
            plan[name] = (float(th.value), prob_above_ordered(
                near[0], near[1], breakeven,
                upper=(inside[0], inside[1]), lower=(far[0], far[1])))
        db.exploration = plan
        return plan

    async def _band_counts(
        self, th: ThresholdConfig, lo: float, hi: float, explored_only: bool,
        start: float, end: float,
    ) -> tuple[int, int, set[int | float]]:
        """Successes, failures and values seen in the band between ``lo`` and ``hi``
        (``(lo, hi]`` for a max limit, ``[lo, hi)`` for a min limit) in ``[start, end)``."""
        counts = await self._db.store.context_counts(
            start, end, th.attribute, th.op_type or None
        )
        s = f = 0
        values: set[int | float] = set()
        for (v, o, x), n in counts.items():
            val = _number(v)
            if val is None:
                continue
            # For a max-limit lowered from 8 to 7 the band is (7, 8]; raised, the same.
            inside = lo < val <= hi if th.limit == "max" else lo <= val < hi
            if not inside or (explored_only and not x):
                continue
            values.add(_num(val))
            if o == "success":
                s += n
            elif o == "failure":
                f += n
        return s, f, values

    async def _band(
        self, th: ThresholdConfig, c: ThresholdChange, start: float, end: float
    ) -> dict[str, Any]:
        """Outcomes since the change in the band between the old and new value."""
        assert c.old_value is not None
        lo, hi = sorted((float(c.old_value), float(c.new_value)))
        # Refused work is known only through exploration.
        s, f, values = await self._band_counts(th, lo, hi, c.kind == "lower", start, end)
        return {"values": sorted(values), "n": s + f, "successes": s, "failures": f,
                "success_rate": s / (s + f) if s + f else None}

    # -- evidence since the last change ---------------------------------------------

    async def _anchor(self, name: str, history: list[ThresholdChange] | None = None) -> float:
        """When the outcomes of ``name``'s current value began to count: its last
        change, or the start of the window the controller first analysed it in
        (kept in the store's meta)."""
        if history is None:
            history = await self.history(name)
        self._anchored.add(name)
        if history:
            return history[-1].at
        store = self._db.store
        key = ANCHOR + name
        got = await store.meta_get(key)
        if got is None:
            # The first look's window is the first block: chosen by the clock, not
            # by what the outcomes in it say, so the stream's start stays fixed.
            now = self._db.now()
            if not math.isfinite(now):
                raise ValueError(f"the kit's clock returned {now!r}")
            start = now - self._db.config.learning.window_days * DAY
            if await store.meta_swap(key, None, repr(start)):
                return start
            got = await store.meta_get(key)
        return float(got) if got is not None else self._db.now()

    async def related_since(self, name: str, anchor: float | None = None) -> float:
        """:func:`~learnkit._insights.advice.related_p` on the outcomes since ``name``
        last changed (``anchor``, else :meth:`_anchor`; at most :data:`MAX_STREAMS`
        windows back)."""
        from .._insights.advice import related_p

        db = self._db
        cfg = db.config
        th = self._threshold(cfg, name)
        now = db.now()
        if anchor is None:
            anchor = await self._anchor(name)
        start = max(anchor, now - MAX_STREAMS * cfg.learning.window_days * DAY)
        values: dict[float, list[int]] = {}
        for (v, o, _x), n in (await db.store.context_counts(
                start, now, th.attribute, th.op_type or None)).items():
            val = _number(v)
            if val is None or o not in ("success", "failure"):
                continue
            values.setdefault(val, [0, 0])[o == "failure"] += n
        return related_p(th.limit, values) if values else 1.0

    async def anchor_all(self) -> None:
        """Fix the anchor of every threshold that has none yet: at each evaluation and
        before applying anything, for all thresholds at once, so that no
        threshold's anchor waits for a recommendation of its own."""
        for name in self._db.config.thresholds:
            if name not in self._anchored:
                await self._anchor(name)

    async def stream_p(
        self, name: str, *, tighten: bool, to: float | None = None,
        anchor: float | None = None,
    ) -> tuple[float, int]:
        """Anytime-valid p-value that the band next to ``name``'s limit is on the side
        a move assumes, on its outcomes since the threshold last changed; and n.

        ``tighten``: the band just inside the limit, all its outcomes, below
        break-even. Else the band just outside, explored outcomes, above it.
        The band is one ``step`` wide, or reaches only to ``to`` (the value a
        move clipped at ``min``/``max`` would set).
        The outcomes since the anchor (:meth:`_anchor`) are cut into blocks of
        ``window_days``; stream ``k`` holds every outcome from block ``k`` on and
        gets the level ``alpha / ((k + 1)(k + 2))`` (these sum to ``alpha``), so
        old evidence is forgotten by restarting, without looking at the same
        outcomes at a fresh level every day
        (:func:`~learnkit._insights.statistics.restart_p_value`). At most
        :data:`MAX_STREAMS` of the newest streams are tested.
        """
        from .._insights.statistics import restart_p_value

        db = self._db
        cfg = db.config
        th = self._threshold(cfg, name)
        lc = cfg.learning
        breakeven = lc.failure_cost / (1 + lc.failure_cost)
        now = db.now()
        if anchor is None:
            anchor = await self._anchor(name)
        width = lc.window_days * DAY
        last = max(0, int((now - anchor) // width))
        step = float(th.step)
        v = float(th.value)
        if to is not None:
            lo, hi = sorted((v, float(to)))
        elif th.limit == "max":
            lo, hi = (v - step, v) if tighten else (v, v + step)
        else:
            lo, hi = (v, v + step) if tighten else (v - step, v)
        blocks = []
        first = max(0, last - MAX_STREAMS + 1)
        for k in range(first, last + 1):
            end = now if k == last else anchor + (k + 1) * width
            bs, bf, _ = await self._band_counts(th, lo, hi, not tighten, anchor + k * width, end)
            blocks.append((bs, bf))
        p = restart_p_value(blocks, breakeven, "below" if tighten else "above", first=first)
        return p, sum(s + f for s, f in blocks)
