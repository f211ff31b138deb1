"""Configuration from the environment, read when a kit opens (or the CLI starts).

- ``LEARNKIT_CONFIG``: the config file used when none is named
  (``learnkit.open()`` without a path, the CLI without ``--config``).
- ``LEARNKIT_DISABLED``: ``1`` (or ``true``, ``yes``, ``on``) turns
  instrumentation into a no-op: ``@tracked`` and ``track`` run the code
  untracked without a warning, ``kit.record`` and refusals by ``kit.admit``
  record nothing. The store still opens, so analysis and the command line
  work on what was recorded before.
"""

from __future__ import annotations

import os

__all__ = ["config_path", "disabled"]

_TRUE = frozenset({"1", "true", "yes", "on"})


def config_path() -> str:
    """``LEARNKIT_CONFIG``, else ``learnkit.toml``."""
    return os.environ.get("LEARNKIT_CONFIG") or "learnkit.toml"


def disabled() -> bool:
    """True when ``LEARNKIT_DISABLED`` says so."""
    return os.environ.get("LEARNKIT_DISABLED", "").strip().lower() in _TRUE
