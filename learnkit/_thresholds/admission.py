"""Admission: apply the thresholds before work starts, and explore a little.

``kit.admit(op_type, complexity=9)`` checks every threshold that gates one
of the given attributes (and the operation type, if the threshold names
one). Refused work is recorded as ``skipped``. Some refused work is admitted
anyway, mostly next to the threshold (:func:`explore_probability`), when one
threshold refuses it (work two refuse is never explored); the next
operation of that type started in the same task is marked with the
probability it was explored with, so analysis can tell explored outcomes
apart and a threshold set too low, or a world that got better, can bring it
back up.
"""

from __future__ import annotations

import contextvars
import math
import random
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import attrs

from .._errors import UnknownAttributeError, did_you_mean

if TYPE_CHECKING:
    from .._config import Config, ThresholdConfig

__all__ = ["NEAR_CAP", "Admission", "admit", "explore_probability", "steps_beyond"]

#: Most of the band next to a threshold that Thompson sampling may explore.
NEAR_CAP = 0.5
#: Each band further out is explored this many times less than the one before.
FAR_DECAY = 4.0

#: (op_type, probability) waiting for the next operation of that type.
pending: contextvars.ContextVar[tuple[str, float] | None] = contextvars.ContextVar(
    "learnkit_admission", default=None
)


@attrs.frozen
class Admission:
    """Whether to attempt the work. Truthy when admitted."""

    #: Attempt it.
    admitted: bool
    #: Admitted only to explore (it was refused by a threshold).
    explored: bool = False
    #: For explored work: the probability with which refused work is explored.
    probability: float | None = None
    #: The threshold that refused it, if any.
    threshold: str | None = None
    #: Why, in words.
    reason: str = ""

    def __bool__(self) -> bool:
        return self.admitted


def _refuses(limit: str, value: float, attr_value: Any) -> bool:
    if isinstance(attr_value, bool) or not isinstance(attr_value, (int, float)):
        return False
    return bool(attr_value > value) if limit == "max" else bool(attr_value < value)


#: Steps beyond the limit for a value too far out to count (infinite, or an int
#: no float can hold): explored with probability 0.
_FAR = 1 << 30


def steps_beyond(th: ThresholdConfig, attr_value: float) -> int:
    """How many ``step``s beyond the limit a refused value lies (1: the band next to it)."""
    try:
        gap = attr_value - th.value if th.limit == "max" else th.value - attr_value
        steps = gap / th.step - 1e-9
    except OverflowError:  # an int beyond any float
        return _FAR
    if not math.isfinite(steps):
        return _FAR
    return max(1, min(_FAR, math.ceil(steps)))


def explore_probability(
    th: ThresholdConfig, explore: float, steps: int, near: tuple[float, float] | None
) -> float:
    """The probability of exploring refused work ``steps`` bands beyond the limit.

    The band next to the limit: the learning loop's Thompson probability ``near``
    (P(that band succeeds above break-even), from its recent explored outcomes,
    ordered between its neighbours: see ``ThresholdController.plan_exploration``),
    at most :data:`NEAR_CAP` and at least ``explore``; ``explore`` until the loop
    has computed one for the value in force. Bands further out: ``explore``,
    divided by :data:`FAR_DECAY` per step. ``explore = 0`` turns it all off.
    """
    if explore <= 0:
        return 0.0
    if steps > 1:
        # (a power of 1/4 underflows to 0 far out; a power of 4 would overflow)
        return explore * (1.0 / FAR_DECAY) ** (steps - 1)
    if near is None or near[0] != th.value:
        return explore
    return max(explore, min(NEAR_CAP, near[1]))


def admit(
    cfg: Config,
    op_type: str,
    attrs_: dict[str, Any],
    rng: random.Random,
    refuse: Callable[[str], None],
    plan: Mapping[str, tuple[float, float]] | None = None,
) -> Admission:
    """See :meth:`learnkit.Kit.admit`; ``refuse(why)`` records refused work.

    ``plan``: name -> (threshold value, exploration probability of the band next
    to it), as the learning loop left it.

    Raises:
        UnknownAttributeError: an attribute gates nothing while a gated
            attribute of this op_type is missing and spelt almost the same.
    """
    gated = {th.attribute for th in cfg.thresholds.values()
             if not th.op_type or th.op_type == op_type}
    missing = gated - attrs_.keys()
    if missing:
        for given in attrs_.keys() - gated:
            hint = did_you_mean(given, missing)
            if hint:
                raise UnknownAttributeError(
                    f"kit.admit({op_type!r}, {given}=...): no threshold gates {given!r}{hint}; "
                    f"gated attributes: {', '.join(sorted(gated))}"
                )
    refusing = [
        (name, th) for name, th in cfg.thresholds.items()
        if th.attribute in attrs_ and not (th.op_type and th.op_type != op_type)
        and _refuses(th.limit, th.value, attrs_[th.attribute])
    ]
    if refusing:
        name, th = refusing[0]
        v = attrs_[th.attribute]
        sign = ">" if th.limit == "max" else "<"
        why = f"{name}: {th.attribute} = {v} {sign} {th.value}"
        # Work refused by one threshold only is explored: its outcome then speaks
        # for that threshold's band as raising it would admit it. Work another
        # threshold refuses too would bias that band (and cost twice): refused.
        explore = 0.0 if len(refusing) > 1 else explore_probability(
            th, cfg.learning.explore, steps_beyond(th, v), (plan or {}).get(name))
        if explore > 0 and rng.random() < explore:
            pending.set((op_type, explore))
            return Admission(True, True, explore, name, f"explored ({explore:.0%}); {why}")
        if len(refusing) > 1:
            why += f" (and {', '.join(n for n, _ in refusing[1:])})"
        refuse(why)
        return Admission(False, False, None, name, why)
    pending.set(None)
    return Admission(True, reason="within every threshold")
