"""learnkit: let an async orchestrator learn from its own mistakes."""

from ._analytics import AnalyticsCollector, Rate
from ._config import Config, LearningConfig, StorageConfig, ThresholdConfig, load_config
from ._errors import (
    ConcurrentEditError,
    ConfigError,
    ConfigNotFoundError,
    LearnkitError,
    NoKitError,
    StoreError,
    UnknownOperationError,
    UnknownThresholdError,
)
from ._insights.clustering import cluster_messages
from ._insights.generator import (
    ErrorCluster,
    FailurePattern,
    InsightsGenerator,
    Recommendation,
    Summary,
)
from ._insights.statistics import wilson_interval
from ._kit import Database, Kit, Thresholds, open
from ._model import Operation, Outcome
from ._storage.writer import WriterStats
from ._thresholds.admission import Admission
from ._thresholds.controller import ThresholdChange, ThresholdController, Verdict
from ._thresholds.loop import LearningReport
from ._tracking import OperationTracker, current_operation, track, tracked

__version__ = "0.1.0"

__all__ = [
    "Admission",
    "AnalyticsCollector",
    "ConcurrentEditError",
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
    "LearnkitError",
    "NoKitError",
    "Operation",
    "OperationTracker",
    "Outcome",
    "Rate",
    "Recommendation",
    "StorageConfig",
    "StoreError",
    "Summary",
    "ThresholdChange",
    "ThresholdConfig",
    "ThresholdController",
    "Thresholds",
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
    "wilson_interval",
]
