"""The exceptions learnkit raises: one root, one class per failure mode."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "ConcurrentEditError",
    "ConfigError",
    "ConfigNotFoundError",
    "KitClosedError",
    "LearnkitError",
    "StoreCorruptError",
    "StoreError",
    "StoreUnavailableError",
    "UnknownAttributeError",
    "UnknownOperationError",
    "UnknownThresholdError",
]


class LearnkitError(Exception):
    """Root of every exception learnkit raises on purpose."""


class ConfigError(LearnkitError, ValueError):
    """learnkit.toml cannot be read or does not describe a valid configuration.

    The message names the file, the line where known, the key at fault and
    what would be valid.
    """

    def __init__(
        self,
        path: object,
        problem: str,
        *,
        key: str | None = None,
        line: int | None = None,
    ) -> None:
        self.path = str(path)
        self.key = key
        self.line = line
        self.problem = problem
        where = self.path if line is None else f"{self.path}:{line}"
        what = f"{key}: " if key else ""
        super().__init__(f"{where}: {what}{problem}")


class ConfigNotFoundError(ConfigError, FileNotFoundError):
    """The configuration file does not exist."""

    def __init__(self, path: object) -> None:
        ConfigError.__init__(
            self,
            path,
            "no such file; create one with `learnkit init` "
            "or pass the path of an existing learnkit.toml",
        )


class ConcurrentEditError(LearnkitError, RuntimeError):
    """The config file changed between reading it and writing it back."""


class ConfigNotWritableError(LearnkitError, PermissionError):
    """The config file (or its directory) is read-only or immutable: a
    threshold change was not applied, the file is left as it is."""


class StoreError(LearnkitError, RuntimeError):
    """The store failed: it cannot be opened (bad path, newer schema, not a
    database) or an operation on it failed for a reason that will not clear."""


class StoreUnavailableError(StoreError):
    """A storage fault that may clear by itself (a lock held by another process,
    a full disk, a lost connection); the writer keeps the records and retries."""


class StoreCorruptError(StoreError):
    """The database file is damaged (or is not a database any more); learnkit
    stops writing to it rather than retry, and says so once."""


class KitClosedError(LearnkitError, RuntimeError):
    """A kit was used after it was closed (``kit.record``, ``kit.flush``...)."""


class UnknownOperationError(LearnkitError, KeyError):
    """An operation id that the tracker never issued, or already completed."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class UnknownAttributeError(LearnkitError, ValueError):
    """An attribute given to ``kit.admit`` that looks like a misspelt gated attribute."""


class UnknownThresholdError(LearnkitError, KeyError):
    """A threshold name that learnkit.toml does not define."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""



def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices``, or ``""``."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.75)
    return f" (did you mean {close[0]!r}?)" if close else ""
