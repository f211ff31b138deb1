"""Running cleanup to its end despite cancellation, within a bound."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

__all__ = ["run_shielded"]


async def run_shielded(fn: Callable[[], Awaitable[Any]], timeout: float) -> bool:
    """Run ``fn()`` to completion in its own task, shielded from cancellation of the
    caller (repeated ``task.cancel()`` and anyio cancel scopes alike), for at most
    ``timeout`` seconds. Returns True when it finished in time; re-raises a
    cancellation of the caller afterwards, so that cancellation still propagates.

    Exceptions of ``fn`` propagate.
    """
    task = asyncio.get_running_loop().create_task(_call(fn), name="learnkit-close")
    deadline = time.monotonic() + timeout
    cancelled: BaseException | None = None
    with anyio.CancelScope(shield=True):
        while not task.done():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                await asyncio.wait({task}, timeout=left)
            except asyncio.CancelledError as exc:  # keep closing; re-raised below
                cancelled = exc
    if task.done():
        error = task.exception()
        if error is not None and cancelled is None:
            raise error
    if cancelled is not None:
        raise cancelled
    return task.done()


async def _call(fn: Callable[[], Awaitable[Any]]) -> Any:
    return await fn()
