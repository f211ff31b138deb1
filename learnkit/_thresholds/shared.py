"""Threshold values held by a shared store, so that every host agrees on them.

With a store that many hosts share (PostgreSQL), the database, not each
host's learnkit.toml, holds the value in force of every threshold:

- the first host to open seeds each threshold from its file; afterwards the
  file's ``value`` is only the seed, while its bounds, step, attribute and
  description remain the policy each host applies;
- every host overlays the shared values on its config (``kit.thresholds``,
  admission, the controller) and re-reads them at least once per analysis
  interval (every 30 seconds at most);
- a change is a compare-and-set on the threshold's version, with the change
  recorded in the same transaction: of several hosts deciding the same move,
  exactly one applies it, and the others re-read and decide again.

Why the hosts do not also rewrite their files: see docs/scaling.md.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from .._config import LiveConfig, Number
from .._errors import ConcurrentEditError
from .._storage.protocol import SharedThresholdStore

__all__ = ["SharedThresholds"]

log = logging.getLogger("learnkit")


class SharedThresholds:
    """The shared values of a kit's thresholds: pulled into the live config, swapped."""

    def __init__(self, store: SharedThresholdStore, live: LiveConfig) -> None:
        self._store = store
        self._live = live
        #: name -> version last read, for the compare-and-set.
        self.versions: dict[str, int] = {}
        self._seeded: set[str] = set()
        self._warned: set[tuple[str, Number]] = set()

    async def pull(self) -> dict[str, Number]:
        """Read the shared values (seeding those the store lacks) and put them in force."""
        live = self._live
        for name, value in list(live.edits.items()):
            # A person edited this host's file: that decision wins everywhere.
            await self._store.threshold_swap(name, None, float(value))
            log.info("learnkit: %s set to %s in the shared store (edited in %s)",
                     name, _fmt(value), live.file_config.path)
            if live.edits.get(name) == value:
                del live.edits[name]
        file_cfg = self._live.file_config
        new = {n: t.value for n, t in file_cfg.thresholds.items() if n not in self._seeded}
        if new:
            await self._store.threshold_seed(new)
            self._seeded.update(new)
        shared = await self._store.threshold_values()
        self.versions = {n: v for n, (_, v) in shared.items()}
        values: dict[str, Number] = {n: val for n, (val, _) in shared.items()}
        for name, t in file_cfg.thresholds.items():
            v = values.get(name)
            if v is not None and v != t.value and (name, t.value) not in self._warned:
                self._warned.add((name, t.value))
                log.info("learnkit: %s is %s in the shared store %s (%s says %s); the "
                         "shared value is in force", name, _fmt(v),
                         getattr(self._store, "location", ""), file_cfg.path, t.value)
        self._live.set_overlay(values)
        return values

    async def swap(
        self,
        name: str,
        new: Number,
        change: Mapping[str, Any],
        *,
        rolled_back: int | None = None,
    ) -> int:
        """Move ``name`` to ``new`` if no host moved it since :meth:`pull`; record
        ``change`` in the same transaction. Returns the change's id.

        Raises:
            ConcurrentEditError: another host changed it first; pull and decide again.
        """
        version = self.versions.get(name)
        if version is None:
            raise ConcurrentEditError(f"{name} is not in the shared store yet; pull first")
        got = await self._store.threshold_swap(
            name, version, float(new), change, rolled_back=rolled_back
        )
        if got is None:
            raise ConcurrentEditError(
                f"{name} was changed by another host since it was read; re-read and decide again"
            )
        self.versions[name] = version + 1
        self._live.set_overlay({**self._live.overlay, name: new})
        return got


def _fmt(v: Number) -> str:
    return str(int(v)) if float(v).is_integer() else str(v)
