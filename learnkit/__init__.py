"""learnkit: let an async orchestrator learn from its own mistakes."""

from ._admission import Admission
from ._analytics import AnalyticsCollector, Rate
from ._clustering import cluster_messages
from ._config import Config, LearningConfig, StorageConfig, ThresholdConfig, load_config
from ._controller import ThresholdChange, ThresholdController, Verdict
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
from ._insights import ErrorCluster, FailurePattern, InsightsGenerator, Recommendation, Summary
from ._kit import Database, Kit, Thresholds, open
from ._loop import LearningReport
from ._model import Operation, Outcome
from ._stats import wilson_interval
from ._tracking import OperationTracker, current_operation, track, tracked
from ._writer import WriterStats

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
