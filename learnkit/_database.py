"""The parts a kit hands down: ``kit.database``, as the specification's classes take it.

``OperationTracker(kit.database, logger)``, ``AnalyticsCollector(kit.database,
logger)`` and, through the collector, ``InsightsGenerator`` find here what
they need: the store, where tracking records go (writer and clock), and the
configuration in force. The kit builds one; nothing here knows the kit.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ._config import Config, LiveConfig
from ._storage.protocol import Store
from ._tracking import Recorder

if TYPE_CHECKING:
    from ._thresholds.shared import SharedThresholds

__all__ = ["Database"]


class Database:
    """The kit's store handle (``kit.database``): store, recorder and live config."""

    def __init__(self, store: Store, recorder: Recorder, live: LiveConfig) -> None:
        #: The store: the only way to the data.
        self.store = store
        #: Where tracking sends operations (the writer and the kit's clock).
        self.recorder = recorder
        #: The configuration in force, reloaded when learnkit.toml changes.
        self.live = live
        #: Exploration of the band next to each threshold, set by the learning loop:
        #: name -> (the threshold value it was computed for, probability).
        self.exploration: dict[str, tuple[float, float]] = {}
        #: Threshold values held by a shared store (PostgreSQL), or None: learnkit.toml's.
        self.shared: SharedThresholds | None = None

    @property
    def config(self) -> Config:
        """The configuration in force (follows edits of learnkit.toml)."""
        return self.live.config

    @property
    def path(self) -> Path:
        """The database file (``[storage] path``)."""
        return self.live.config.database_path

    def now(self) -> float:
        """The kit's clock (Unix seconds, UTC)."""
        return self.recorder.clock()

    def __repr__(self) -> str:
        return f"<Database {self.store.location}>"
