"""``python -m learnkit``: the command line."""

from ._cli import entrypoint

entrypoint()
