"""learnkit: let an async orchestrator learn from its own mistakes."""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

from ._analytics import AnalyticsCollector, Rate
from ._config import Config, LearningConfig, StorageConfig, ThresholdConfig, load_config
from ._database import Database
from ._errors import (
    ConcurrentEditError,
    ConfigError,
    ConfigNotFoundError,
    ConfigNotWritableError,
    KitClosedError,
    LearnkitError,
    StoreCorruptError,
    StoreError,
    StoreUnavailableError,
    UnknownAttributeError,
    UnknownOperationError,
    UnknownThresholdError,
)
from ._insights.clustering import cluster_messages
from ._insights.generator import InsightsGenerator
from ._insights.patterns import ErrorCluster, FailurePattern, Recommendation, Summary
from ._kit import Kit, Thresholds, open
from ._model import Operation
from ._storage.writer import WriterStats
from ._thresholds.admission import Admission
from ._thresholds.controller import ThresholdChange, ThresholdController, Verdict
from ._thresholds.loop import LearningReport
from ._tracking import OperationTracker, current_operation, track, tracked

try:
    __version__ = _version("learnkit")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "Admission",
    "AnalyticsCollector",
    "ConcurrentEditError",
    "ConfigNotWritableError",
    "Config",
    "ConfigError",
    "ConfigNotFoundError",
    "Database",
    "ErrorCluster",
    "FailurePattern",
    "InsightsGenerator",
    "Kit",
    "LearningConfig",
    "LearningReport",
    "KitClosedError",
    "LearnkitError",
    "Operation",
    "OperationTracker",
    "Rate",
    "Recommendation",
    "StorageConfig",
    "StoreCorruptError",
    "StoreError",
    "StoreUnavailableError",
    "Summary",
    "ThresholdChange",
    "ThresholdConfig",
    "ThresholdController",
    "Thresholds",
    "UnknownAttributeError",
    "UnknownOperationError",
    "UnknownThresholdError",
    "Verdict",
    "WriterStats",
    "cluster_messages",
    "current_operation",
    "load_config",
    "open",
    "track",
    "tracked",
]
