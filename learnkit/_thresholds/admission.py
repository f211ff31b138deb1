"""Admission: apply the thresholds before work starts, and explore a little.

``kit.admit(op_type, complexity=9)`` checks every threshold that gates one
of the given attributes (and the operation type, if the threshold names
one). Refused work is recorded as ``skipped``. A fraction ``explore`` of
refused work is admitted anyway; the next operation of that type started in
the same task is marked with that probability, so analysis can tell
explored outcomes apart and a threshold set too low can rise again.
"""

from __future__ import annotations

import contextvars
import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs

from .._errors import UnknownAttributeError, did_you_mean

if TYPE_CHECKING:
    from .._config import Config

__all__ = ["Admission", "admit"]

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


def admit(
    cfg: Config,
    op_type: str,
    attrs_: dict[str, Any],
    rng: random.Random,
    refuse: Callable[[str], None],
) -> Admission:
    """See :meth:`learnkit.Kit.admit`; ``refuse(why)`` records refused work.

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
    for name, th in cfg.thresholds.items():
        if th.attribute not in attrs_ or (th.op_type and th.op_type != op_type):
            continue
        v = attrs_[th.attribute]
        if not _refuses(th.limit, th.value, v):
            continue
        sign = ">" if th.limit == "max" else "<"
        why = f"{name}: {th.attribute} = {v} {sign} {th.value}"
        explore = cfg.learning.explore
        if explore > 0 and rng.random() < explore:
            pending.set((op_type, explore))
            return Admission(True, True, explore, name, f"explored ({explore:.0%}); {why}")
        refuse(why)
        return Admission(False, False, None, name, why)
    pending.set(None)
    return Admission(True, reason="within every threshold")
