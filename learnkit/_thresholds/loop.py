"""The learning loop: analyse every ``analysis_interval``, measure, apply.

The time of the last analysis is kept in the store, so a restart neither
repeats an analysis nor skips one, and several processes sharing one
database agree on who runs each analysis (compare-and-swap in ``meta``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import attrs

from .._errors import LearnkitError
from .._insights.patterns import Summary
from .controller import ThresholdChange, Verdict

if TYPE_CHECKING:
    from .._database import Database
    from .._insights.generator import InsightsGenerator
    from .controller import ThresholdController

__all__ = ["LearningLoop", "LearningReport"]

log = logging.getLogger("learnkit")
LAST = "last_analysis"


@attrs.frozen
class LearningReport:
    """What one turn of the loop found and did."""

    #: The analysis.
    summary: Summary
    #: Verdicts on earlier changes (rollbacks included).
    verdicts: list[Verdict]
    #: Changes applied this turn.
    applied: list[ThresholdChange]


class LearningLoop:
    """Analyse, judge earlier changes, apply: once, or every ``analysis_interval``."""

    def __init__(
        self, database: Database, insights: InsightsGenerator, controller: ThresholdController,
        *, on_report: Callable[[LearningReport], Awaitable[Any]] | None = None,
    ) -> None:
        self._db = database
        self._insights = insights
        self._controller = controller
        #: Told of every report (the kit's alerts); must not raise.
        self._on_report = on_report

    async def learn_once(self) -> LearningReport:
        """Analyse the window, judge earlier changes, apply what clears the guard rails."""
        lc = self._db.config.learning
        summary = await self._insights.generate_summary(days=lc.window_days)
        verdicts = await self._controller.evaluate()
        applied = await self._controller.apply(summary) if lc.auto_apply else []
        await self._controller.plan_exploration()
        for v in verdicts:
            if v.verdict != "pending":
                log.info("learnkit: %s %s -> %s: %s (%s)%s", v.change.name, v.change.old_value,
                         v.change.new_value, v.verdict, v.reason,
                         "; rolled back" if v.rolled_back else "")
        if not lc.auto_apply and summary["recommended_thresholds"]:
            log.info("learnkit: recommended (auto_apply is off): %s",
                     summary["recommended_thresholds"])
        log.info("learnkit: analysed %d outcomes, %d patterns, %d recommendations, %d applied",
                 summary["sample_size"], len(summary["failure_patterns"]),
                 len(summary["recommendations"]), len(applied))
        report = LearningReport(summary, verdicts, applied)
        if self._on_report is not None:
            await self._on_report(report)
        return report

    async def run(self, *, poll: float = 60.0) -> None:
        """Run forever: one analysis per ``analysis_interval`` across all processes.

        Never raises for learnkit's own faults: they are logged and the loop
        goes on. Cancel the task to stop it.
        """
        db = self._db
        store = db.store
        while True:
            try:
                interval = db.config.learning.analysis_interval
                last = await store.meta_get(LAST)
                now = db.now()
                if last is None:
                    # First start: analyse after one interval, when there is data.
                    await store.meta_swap(LAST, None, repr(now))
                    wait = interval
                else:
                    due = float(last) + interval
                    wait = due - now
                    if wait <= 0 and await store.meta_swap(LAST, last, repr(now)):
                        await self.learn_once()
                        wait = interval
            except asyncio.CancelledError:
                raise
            except (LearnkitError, OSError, ValueError, ArithmeticError) as exc:
                log.error("learnkit: learning loop: %s", exc)
                wait = poll
            except Exception:  # the loop must outlive any single bad analysis
                log.exception("learnkit: learning loop failed; retrying in %.0f s", poll)
                wait = poll
            await asyncio.sleep(max(0.01, min(wait, poll)))
