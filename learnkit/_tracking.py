"""Instrumentation: ``@tracked``, ``track(...)`` and ``OperationTracker``.

The tracking path does only in-memory work: read two clocks, build one
:class:`Operation`, set a context variable for nesting, and hand the
finished operation to the writer's queue.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import itertools
import logging
import os
import time
from collections.abc import Callable, Coroutine, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, ParamSpec, TypeVar, overload

import attrs

from . import _env
from ._errors import UnknownOperationError
from ._model import Operation, clean_message, error_type_name, valid_time
from ._thresholds.admission import pending as _pending_admission

if TYPE_CHECKING:
    from ._storage.writer import Writer

__all__ = ["OperationTracker", "Recorder", "current_operation", "track", "tracked"]

log = logging.getLogger("learnkit")

P = ParamSpec("P")
R = TypeVar("R")

_current: contextvars.ContextVar[Operation | None] = contextvars.ContextVar(
    "learnkit_operation", default=None
)
_perf = time.perf_counter


@attrs.frozen(eq=False)
class Recorder:
    """Where tracking sends operations: one kit's writer and clock."""

    #: The queue operations go to.
    writer: Writer
    #: Unix seconds (UTC) for start and end times.
    clock: Callable[[], float]


class _State:
    """The process-wide stack of open kits' recorders; the top one is current."""

    kits: ClassVar[list[Recorder]] = []
    kit: ClassVar[Recorder | None] = None
    warned: ClassVar[bool] = False


def set_current(kit: Recorder | None, *, remove: Recorder | None = None) -> None:
    """Push ``kit`` as the current recorder, or ``remove`` one (a kit closing)."""
    if remove is not None:
        if remove in _State.kits:
            _State.kits.remove(remove)
    if kit is not None:
        _State.kits.append(kit)
    _State.kit = _State.kits[-1] if _State.kits else None


def _after_fork_in_child() -> None:
    for recorder in _State.kits:
        recorder.writer.after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _untracked(name: str) -> None:
    if not _State.warned and not _env.disabled():
        _State.warned = True
        log.warning(
            "learnkit: %s ran untracked because no kit is open; "
            "wrap your program in `async with learnkit.open(...)`",
            name,
        )


def _mark_explored(op: Operation) -> None:
    """If kit.admit() explored this kind of work in this task, mark the operation."""
    mark = _pending_admission.get()
    if mark is not None and mark[0] == op.op_type:
        op.admission = mark[1]
        _pending_admission.set(None)


def current_operation() -> Operation | None:
    """The operation being tracked in this task or thread, if any."""
    return _current.get()


def explored_mark(op_type: str) -> float | None:
    """Take the exploration mark ``kit.admit`` left for ``op_type`` in this task, if any."""
    mark = _pending_admission.get()
    if mark is not None and mark[0] == op_type:
        _pending_admission.set(None)
        return mark[1]
    return None


def _ended(op: Operation, now: float) -> float:
    """When ``op`` ended: the clock, unless it stepped back past the start (an NTP
    correction); then the start plus the measured duration, so that no record
    ends before it began (an import would refuse it)."""
    if now < op.started_at:
        return op.started_at + (op.duration or 0.0)
    return now


def _finish(
    op: Operation, exc: BaseException | None, kit: Recorder, will_wait: bool = False
) -> None:
    """Fill in the end of ``op`` and queue it; never raises."""
    op.duration = _perf() - op.t0
    op.ended_at = _ended(op, kit.clock())
    if exc is None:
        if op.outcome == "running":
            op.outcome = "success"
    elif isinstance(exc, Exception):
        if op.outcome != "failure":  # an explicit op.fail() before the raise is kept
            op.outcome = "failure"
            op.error_type = error_type_name(type(exc))
            try:
                op.error_message = clean_message(str(exc))
            except Exception:  # a broken __str__ must not hide the user's exception
                op.error_message = f"<unprintable {op.error_type}>"
    else:
        # CancelledError, anyio/trio cancellation, KeyboardInterrupt,
        # SystemExit, GeneratorExit: none of them is the operation failing.
        op.outcome = "cancelled"
        op.error_type = error_type_name(type(exc))
    writer = kit.writer
    writer.live.pop(op, None)
    if not valid_time(op.ended_at):
        writer.reject(op, f"the clock returned {op.ended_at!r}, not Unix seconds")
        return
    writer.submit(op, will_wait=will_wait)


class _Caller:
    """Calls a ``key=`` or ``context=`` callable with the decorated call's arguments.

    The call is bound to the function's signature with defaults applied, so
    ``context=lambda number, model: ...`` sees ``model="small"`` when the
    caller left it out. A callable whose parameters are all named like the
    function's gets just those, by name (``key=lambda issue: ...`` on
    ``def f(issue, retries=3)``); any other gets every argument in order.
    """

    __slots__ = ("_cb", "_names", "_sig")

    def __init__(self, fn: Callable[..., Any], cb: Callable[..., Any]) -> None:
        self._cb = cb
        try:
            self._sig: inspect.Signature | None = inspect.signature(fn)
        except (TypeError, ValueError):  # builtins without a signature
            self._sig = None
        self._names: tuple[str, ...] | None = None
        if self._sig is None:
            return
        try:
            params = inspect.signature(cb).parameters.values()
        except (TypeError, ValueError):
            return
        fn_names = set(self._sig.parameters)
        named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        if all(p.kind in named and p.name in fn_names for p in params):
            self._names = tuple(p.name for p in params)

    def __call__(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if self._sig is None:
            return self._cb(*args, **kwargs)
        bound = self._sig.bind(*args, **kwargs)
        bound.apply_defaults()
        if self._names is None:
            return self._cb(*bound.args, **bound.kwargs)
        arguments = bound.arguments
        return self._cb(**{n: arguments[n] for n in self._names if n in arguments})


def _key_and_context(
    key: _Caller | None,
    context: _Caller | None,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    name: str,
) -> tuple[Any, dict[str, Any] | None]:
    k: Any = None
    c: dict[str, Any] | None = None
    try:
        if key is not None:
            k = key(args, kwargs)
    except Exception as exc:  # the user's callable is learnkit's fault here
        log.warning("learnkit: key callable of %s raised %r; recorded without a key",
                    name, exc)
    try:
        if context is not None:
            c = dict(context(args, kwargs))
    except Exception as exc:
        log.warning("learnkit: context callable of %s raised %r; recorded without context",
                    name, exc)
    return k, c


def _wrap(
    fn: Callable[P, Any],
    op_type: str,
    key_fn: Callable[..., Any] | None,
    context_fn: Callable[..., Mapping[str, Any]] | None,
) -> Callable[P, Any]:
    if inspect.isasyncgenfunction(fn) or inspect.isgeneratorfunction(fn):
        kind = "an async generator" if inspect.isasyncgenfunction(fn) else "a generator"
        raise TypeError(
            f"@tracked cannot time {kind} ({fn.__qualname__}): it would measure only the "
            "creation of the generator. Track the consuming code instead, with "
            "`async with learnkit.track(...)` or `with learnkit.track(...)`."
        )
    key = None if key_fn is None else _Caller(fn, key_fn)
    context = None if context_fn is None else _Caller(fn, context_fn)
    plain = key is None and context is None

    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
            kit = _State.kit
            if kit is None:
                _untracked(op_type)
                return await fn(*args, **kwargs)
            if plain:
                k, c = None, None
            else:
                k, c = _key_and_context(key, context, args, kwargs, op_type)
            op = Operation(op_type, k, c, kit.clock(), _perf(), _current.get())
            if _pending_admission.get() is not None:
                _mark_explored(op)
            writer = kit.writer
            writer.live[op] = None
            token = _current.set(op)
            try:
                result = await fn(*args, **kwargs)
            except Exception as exc:
                _current.reset(token)
                _finish(op, exc, kit, will_wait=True)
                if writer.full:
                    await writer.wait_for_room()
                raise
            except BaseException as exc:  # cancelled: record, but never wait here
                _current.reset(token)
                _finish(op, exc, kit)
                raise
            _current.reset(token)
            op.duration = _perf() - op.t0
            op.ended_at = _ended(op, kit.clock())
            if op.outcome == "running":
                op.outcome = "success"
            writer.live.pop(op, None)
            if not valid_time(op.ended_at):
                writer.reject(op, f"the clock returned {op.ended_at!r}, not Unix seconds")
                return result
            writer.submit(op, will_wait=True)
            if writer.full:
                await writer.wait_for_room()
            return result

        return async_wrapper

    @functools.wraps(fn)
    def sync_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
        kit = _State.kit
        if kit is None:
            _untracked(op_type)
            return fn(*args, **kwargs)
        if plain:
            k, c = None, None
        else:
            k, c = _key_and_context(key, context, args, kwargs, op_type)
        op = Operation(op_type, k, c, kit.clock(), _perf(), _current.get())
        if _pending_admission.get() is not None:
            _mark_explored(op)
        kit.writer.live[op] = None
        token = _current.set(op)
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            _current.reset(token)
            _finish(op, exc, kit)
            raise
        _current.reset(token)
        _finish(op, None, kit)
        return result

    return sync_wrapper


@overload
def tracked(fn: Callable[P, Coroutine[Any, Any, R]], /) -> Callable[P, Coroutine[Any, Any, R]]: ...


@overload
def tracked(fn: Callable[P, R], /) -> Callable[P, R]: ...


@overload
def tracked(
    op_type: str | None = None,
    /,
    *,
    key: Callable[..., Any] | None = None,
    context: Callable[..., Mapping[str, Any]] | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...


def tracked(
    fn_or_type: Callable[P, R] | str | None = None,
    /,
    *,
    key: Callable[..., Any] | None = None,
    context: Callable[..., Mapping[str, Any]] | None = None,
) -> Any:
    """Record the outcome of every call of an async or sync function.

    Use bare (``@tracked``: the operation type is the function's qualified
    name) or with arguments::

        @tracked("process_issue",
                 key=lambda issue: f"issue-{issue.number}",
                 context=lambda issue: {"complexity": issue.complexity})
        async def process_issue(issue): ...

    Args:
        fn_or_type: the function (bare use) or the operation type.
        key: called with the call's arguments (bound to the function's
            signature, defaults applied; a callable naming only some of the
            parameters gets just those); its result identifies the work item
            (``"issue-123"``).
        context: called the same way; returns a mapping of context
            attributes (``{"complexity": 7}``).

    An exception records ``failure`` with its ``module.QualName`` and message
    and propagates unchanged; cancellation, KeyboardInterrupt and SystemExit
    record ``cancelled``. With no kit open the function runs untracked.

    Raises:
        TypeError: the function is a generator or async generator.
    """
    if callable(fn_or_type):
        f = fn_or_type
        return _wrap(f, f.__qualname__, key, context)
    op_type = fn_or_type

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        return _wrap(fn, op_type or fn.__qualname__, key, context)

    return decorate


class track:
    """Track a block: ``async with track("run_tests", key="issue-1", complexity=7) as op``.

    Works with ``async with`` and plain ``with``. Keyword arguments other
    than ``key`` become context. Inside, ``op.set(...)`` adds context and
    ``op.fail(error_type, message)`` records a failure without raising.
    """

    __slots__ = ("_context", "_key", "_kit", "_op", "_op_type", "_token")

    def __init__(self, op_type: str, /, *, key: str | None = None, **context: Any) -> None:
        self._op_type = op_type
        self._key = key
        self._context = context or None
        self._op: Operation | None = None
        self._kit: Recorder | None = None
        self._token: contextvars.Token[Operation | None] | None = None

    def _enter(self) -> Operation:
        kit = _State.kit
        op = Operation(
            self._op_type, self._key, self._context,
            kit.clock() if kit is not None else time.time(), _perf(), _current.get(),
        )
        if kit is None:
            _untracked(self._op_type)
        else:
            _mark_explored(op)
            kit.writer.live[op] = None
            self._kit = kit
            self._op = op
            self._token = _current.set(op)
        return op

    def _exit(self, exc: BaseException | None, will_wait: bool = False) -> None:
        if self._token is not None:
            try:
                _current.reset(self._token)
            except (ValueError, RuntimeError):
                # Exited in another context than it was entered (an async
                # generator stepped by one task and closed by another): that
                # context's current operation is not this block's to restore.
                pass
            self._token = None
        if self._op is not None and self._kit is not None:
            _finish(self._op, exc, self._kit, will_wait)
            self._op = None

    async def __aenter__(self) -> Operation:
        return self._enter()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        kit = self._kit
        waits = exc is None or isinstance(exc, Exception)
        self._exit(exc, waits)
        if waits and kit is not None and kit.writer.full:
            await kit.writer.wait_for_room()

    def __enter__(self) -> Operation:
        return self._enter()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._exit(exc)


class OperationTracker:
    """Explicit start/complete tracking, as in the original specification.

    ``OperationTracker(kit.database, logger)``; ``kit.tracker`` is one.
    """

    def __init__(self, database: Any, logger: logging.Logger | None = None) -> None:
        recorder = getattr(database, "recorder", None)
        if not isinstance(recorder, Recorder):
            raise TypeError(
                f"OperationTracker needs a kit's database (kit.database), "
                f"got {type(database).__name__}"
            )
        self._recorder = recorder
        self._log = logger or log
        self._ops: dict[int, Operation] = {}
        self._ids = itertools.count(1)

    def start_operation(
        self,
        op_type: str,
        key: str | None = None,
        *,
        context: Mapping[str, Any] | None = None,
    ) -> int:
        """Start an operation; returns the id to pass to :meth:`complete_operation`.

        The operation tracked in the current task, if any, becomes its parent.
        """
        kit = self._recorder
        op = Operation(
            op_type, key, context, kit.clock(), _perf(), _current.get(),
        )
        _mark_explored(op)
        kit.writer.live[op] = None
        op_id = next(self._ids)
        self._ops[op_id] = op
        return op_id

    def complete_operation(
        self,
        op_id: int,
        success: bool,
        error_type: str | None = None,
        error_message: str | None = None,
        *,
        cancelled: bool = False,
        context: Mapping[str, Any] | None = None,
    ) -> None:
        """Complete a started operation as success, failure or (``cancelled=True``) cancelled.

        Raises:
            UnknownOperationError: ``op_id`` was not started here or is already complete.
        """
        op = self._ops.pop(op_id, None)
        if op is None:
            raise UnknownOperationError(
                f"operation id {op_id!r} is unknown or already completed; pass the id "
                "that start_operation() returned, once"
            )
        if context:
            op.add_context(context)
        if cancelled:
            op.outcome = "cancelled"
        elif not success:
            op.fail(error_type or "Failure", error_message)
        _finish(op, None, self._recorder)

    @property
    def in_flight(self) -> int:
        """Operations started here and not yet completed."""
        return len(self._ops)
