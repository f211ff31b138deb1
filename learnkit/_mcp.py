"""``learnkit mcp``: an MCP server on stdio, so an agent can ask what has been failing and why.

Built on the official MCP Python SDK (the ``mcp`` extra): ``MCPServer`` in
SDK 2.x, ``FastMCP`` in 1.x, whichever is installed. Tools:

- ``summary``: success rate, counts, per-type rates, top patterns and
  recommendations for a window;
- ``failure_patterns``: the patterns with their evidence, and the error
  clusters with an example message each;
- ``error_clusters``: the clusters alone, with trend and example;
- ``thresholds``: each threshold's settings, value in force and history;
- ``should_attempt``: the admission decision for a piece of work, with its
  reason and the success estimate of the work's band, computed without
  recording anything (no ``skipped`` row, no exploration draw);
- ``apply_recommendations``: only when started with ``--allow-apply``.

Everything else is read-only: the kit is opened read-only unless
``--allow-apply`` is given. The protocol owns stdout; logs go to stderr.
"""

from __future__ import annotations

import importlib
import json
import random
from typing import TYPE_CHECKING, Any

import attrs

import learnkit

from ._insights.statistics import beta_cdf, wilson_interval
from ._model import DAY
from ._thresholds.admission import admit
from ._views.format import json_safe

if TYPE_CHECKING:
    from ._kit import Kit

__all__ = ["TOOLS", "build_server", "serve"]

#: The tools every server has (``apply_recommendations`` is added by ``--allow-apply``).
TOOLS = ("summary", "failure_patterns", "error_clusters", "thresholds", "should_attempt")

INSTRUCTIONS = (
    "learnkit records the outcome of every operation this orchestrator runs. Ask it what has "
    "been failing (summary, failure_patterns, error_clusters), which thresholds are in force "
    "(thresholds), and before starting a piece of work whether it is worth attempting "
    "(should_attempt). Confidence values are posterior probabilities: 0.7 means roughly one "
    "in three such findings may be wrong."
)




def _pattern(p: Any) -> dict[str, Any]:
    d: dict[str, Any] = json_safe(p)
    return {k: v for k, v in d.items() if v is not None}


def _cluster(c: Any) -> dict[str, Any]:
    return _cleaned({
        "id": c.id, "error_type": c.error_type, "template": c.template, "count": c.count,
        "share_of_failures": c.share_of_failures, "trend": c.trend,
        "previous_count": c.previous_count, "growth_confidence": c.confidence,
        "first_seen": c.first_seen, "last_seen": c.last_seen, "op_types": c.op_types,
        "example": c.example,
    })


def _cleaned(d: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = json_safe(d)
    return out


def _recommendation(r: Any) -> dict[str, Any]:
    return _cleaned({"action": r.action, "message": r.message, "confidence": r.confidence,
                   "threshold": r.threshold, "current": r.current,
                   "recommended": r.recommended, "expected": r.expected})


class _NeverExplore(random.Random):
    """A draw that never falls under ``explore``: the answer is the thresholds' own."""

    def random(self) -> float:
        return 1.0


class Tools:
    """The tools' bodies, on an open kit (plain async methods, testable without MCP)."""

    def __init__(self, kit: Kit) -> None:
        self.kit = kit

    async def summary(self, days: float | None = None) -> dict[str, Any]:
        s = await self.kit.insights.generate_summary(days)
        return _cleaned({
            "window": {"days": s["days"], "start": s["start"], "end": s["end"]},
            "success_rate": s["success_rate"],
            "sample_size": s["sample_size"],
            "outcome_counts": s["outcome_counts"],
            "rates_by_type": {t: {"success_rate": r.rate, "n": r.n, "interval": [r.low, r.high]}
                              for t, r in s["rates_by_type"].items()},
            "top_patterns": [p.description for p in s["failure_patterns"][:10]],
            "error_clusters": len(s["error_clusters"]),
            "recommendations": [_recommendation(r) for r in s["recommendations"]],
            "recommended_thresholds": s["recommended_thresholds"],
        })

    async def failure_patterns(self, days: float | None = None,
                               limit: int = 20) -> dict[str, Any]:
        s = await self.kit.insights.generate_summary(days)
        return {
            "window_days": s["days"],
            "patterns": [_pattern(p) for p in s["failure_patterns"][:limit]],
            "error_clusters": [_cluster(c) for c in s["error_clusters"][:limit]],
        }

    async def error_clusters(self, days: float | None = None, limit: int = 20) -> dict[str, Any]:
        s = await self.kit.insights.generate_summary(days)
        return {"window_days": s["days"],
                "error_clusters": [_cluster(c) for c in s["error_clusters"][:limit]]}

    async def thresholds(self) -> dict[str, Any]:
        history = await self.kit.controller.history()
        out = {}
        for name, th in self.kit.config.thresholds.items():
            out[name] = {
                **json_safe(attrs.asdict(th)),
                "history": [json_safe({k: v for k, v in attrs.asdict(c).items()
                                    if k != "evidence"})
                            for c in history if c.name == name],
            }
        return {"config": str(self.kit.config.path), "thresholds": out}

    async def should_attempt(self, op_type: str,
                             attributes: dict[str, Any] | None = None) -> dict[str, Any]:
        """The admission decision, computed without recording or exploring."""
        cfg = self.kit.config
        attrs_ = dict(attributes or {})
        decision = admit(cfg, op_type, attrs_, _NeverExplore(), lambda why: None)
        lc = cfg.learning
        days = lc.window_days
        now = self.kit.now()
        store = self.kit.database.store
        break_even = lc.failure_cost / (1 + lc.failure_cost)
        bands = []
        for name, th in cfg.thresholds.items():
            if th.attribute not in attrs_ or (th.op_type and th.op_type != op_type):
                continue
            value = attrs_[th.attribute]
            raw = await store.context_counts(now - days * DAY, now, th.attribute, op_type)
            s = f = 0
            for (v, outcome, _), n in raw.items():
                try:
                    same = json.loads(v) == value
                except ValueError:
                    same = False
                if same and outcome == "success":
                    s += n
                elif same and outcome == "failure":
                    f += n
            n = s + f
            bands.append(json_safe({
                "threshold": name, "attribute": th.attribute, "value": value,
                "window_days": days, "successes": s, "failures": f,
                "success_rate": s / n if n else None,
                "interval": list(wilson_interval(s, n)) if n else None,
                "posterior_mean": (s + 1) / (n + 2),
                "break_even": break_even,
                "p_worth_attempting": 1.0 - beta_cdf(break_even, s + 1, f + 1),
            }))
        return {
            "attempt": decision.admitted,
            "reason": decision.reason,
            "threshold": decision.threshold,
            "bands": bands,
            "exploration": (f"learnkit.admit() would still attempt {lc.explore:.0%} of refused "
                            "work to keep learning" if not decision.admitted else None),
            "note": "computed read-only: nothing was recorded",
        }

    async def apply_recommendations(self) -> dict[str, Any]:
        lc = self.kit.config.learning
        summary = await self.kit.insights.generate_summary(lc.window_days)
        made = await self.kit.controller.apply(summary)
        return {"applied": [json_safe({k: v for k, v in attrs.asdict(c).items()
                                    if k != "evidence"}) for c in made],
                "recommended": summary["recommended_thresholds"]}


def _server_class() -> Any:
    """``MCPServer`` (SDK 2.x) or ``FastMCP`` (1.x)."""
    try:
        return importlib.import_module("mcp.server.mcpserver").MCPServer
    except ImportError:
        return importlib.import_module("mcp.server.fastmcp").FastMCP


def build_server(kit: Kit, *, allow_apply: bool = False) -> Any:
    """The MCP server with learnkit's tools, on ``kit``."""
    tools = Tools(kit)
    server = _server_class()("learnkit", instructions=INSTRUCTIONS)

    described = [
        (tools.summary, "Success rate, outcome counts, per-type rates, top failure patterns and "
         "recommendations for the last `days` days (default: learning.window_days)."),
        (tools.failure_patterns, "Failure patterns (condition, failure rates in and out, lift, "
         "confidence) and error clusters with an example message each."),
        (tools.error_clusters, "Error clusters (error type + message template) with count, "
         "trend against the window before, first/last seen and an example message."),
        (tools.thresholds, "Every threshold in learnkit.toml: value in force, bounds, what it "
         "gates, and the history of its changes and rollbacks."),
        (tools.should_attempt, "Should I attempt this work? Give the operation type and its "
         "context attributes (e.g. {\"complexity\": 9}); returns the admission decision with "
         "its reason and the success estimate of the work's band. Read-only: nothing is "
         "recorded."),
    ]
    if allow_apply:
        described.append((tools.apply_recommendations, "Apply the threshold recommendations "
                          "that clear the guard rails (rewrites learnkit.toml; recorded in the "
                          "threshold history)."))
    for fn, description in described:
        server.add_tool(fn, name=fn.__name__, description=description)
    return server


async def serve(config: str, *, allow_apply: bool = False) -> int:
    """Run the server on stdio until the client closes it."""
    async with learnkit.open(config, learning_loop=False, read_only=not allow_apply) as kit:
        await build_server(kit, allow_apply=allow_apply).run_stdio_async()
    return 0
