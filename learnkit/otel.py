"""OpenTelemetry in and out: learn from spans, and show learnkit's operations as spans.

In: :func:`processor` returns a ``SpanProcessor`` that turns ended spans into
learnkit operations, so code traced with OpenTelemetry (directly, or through
Logfire, Langfuse, OpenLLMetry) is learnt from without a learnkit decorator::

    provider.add_span_processor(learnkit.otel.processor(kit))

Out: :func:`emit` sends every operation learnkit records to a tracer provider
as a span, following the semantic conventions for exceptions, and threshold
changes and rollbacks as span events.

Needs the optional extra: ``pip install 'learnkit[otel]'``. See
docs/integrations.md.
"""

from __future__ import annotations

import asyncio
import fnmatch
import functools
import logging
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

try:
    from opentelemetry import context as otel_context
    from opentelemetry import trace
    from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
    from opentelemetry.trace import Status, StatusCode
except ImportError as exc:  # pragma: no cover - exercised without the extra only
    raise ImportError(
        "learnkit.otel needs the OpenTelemetry SDK, which is an optional extra: "
        "pip install 'learnkit[otel]' (or pip install 'opentelemetry-sdk>=1.25')"
    ) from exc

from ._model import Operation, clean_message, clean_text, valid_time
from ._tracking import current_operation

if TYPE_CHECKING:
    from ._kit import Kit
    from ._storage.writer import Writer
    from ._thresholds.controller import ThresholdChange

__all__ = ["CANCELLED_TYPES", "Emitter", "LearnkitSpanProcessor", "emit", "processor"]

log = logging.getLogger("learnkit")

#: The instrumentation scope of the spans :func:`emit` makes; the processor
#: never imports them back.
SCOPE = "learnkit"

#: ``exception.type`` values that mean the work was cancelled, not that it failed.
CANCELLED_TYPES = frozenset({
    "asyncio.exceptions.CancelledError", "asyncio.CancelledError", "CancelledError",
    "concurrent.futures._base.CancelledError", "trio.Cancelled", "KeyboardInterrupt",
    "SystemExit", "GeneratorExit",
})

#: Spans open at once that the processor remembers (for parent links); beyond
#: it the oldest are forgotten (a leak of spans that never end stays bounded).
MAX_OPEN = 100_000

_NS = 1e-9


def _matcher(patterns: Iterable[str] | None) -> Callable[[str], bool] | None:
    """A test for names: exact names or ``fnmatch`` patterns (``http.*``)."""
    if patterns is None:
        return None
    exact: set[str] = set()
    globs: list[str] = []
    for p in patterns:
        if any(c in p for c in "*?["):
            globs.append(p)
        else:
            exact.add(p)

    def match(name: str) -> bool:
        return name in exact or any(fnmatch.fnmatchcase(name, g) for g in globs)

    return match


def _value(v: Any) -> Any:
    """An attribute value as context: sequences become lists."""
    if isinstance(v, (tuple, list)):
        return list(v)
    return v


class _Open:
    """What the processor remembers of a started span."""

    __slots__ = ("counted", "op")

    def __init__(self, op: Operation | None, counted: bool) -> None:
        #: The span's own operation if counted, else its nearest counted ancestor's.
        self.op = op
        self.counted = counted


class LearnkitSpanProcessor(SpanProcessor):
    """Turns ended spans into learnkit operations; made by :func:`processor`.

    Thread-safety: spans start and end on any thread. The processor builds a
    placeholder operation when a counted span starts (so that children ending
    first can name it as their parent, and a span running longer than a second
    is stored as ``running``, and as ``abandoned`` if the process dies), and
    when it ends hands the rest to the kit's event loop
    (:meth:`Writer.call_soon`), where the operation is completed and queued:
    no learnkit state is changed off the loop thread except the writer's
    thread-safe table of running operations, and a span's thread never blocks.
    """

    def __init__(
        self,
        kit: Kit,
        *,
        op_type_attribute: str | None = None,
        key_attribute: str | None = None,
        attributes: Collection[str] = (),
        names: Iterable[str] | None = None,
        scopes: Iterable[str] | None = None,
        root_only: bool = False,
        include: Callable[[ReadableSpan], bool] | None = None,
    ) -> None:
        self._kit = kit
        self._writer: Writer = kit.database.recorder.writer
        self._op_type_attribute = op_type_attribute
        self._key_attribute = key_attribute
        self._attributes = _matcher(attributes) if attributes else None
        self._names = _matcher(names)
        self._scopes = _matcher(scopes)
        self._root_only = root_only
        self._include = include
        self._lock = threading.Lock()
        self._open: dict[tuple[int, int], _Open] = {}
        #: Spans turned into operations (handed to the kit's loop).
        self.recorded = 0

    # -- which spans count ----------------------------------------------------------

    def _counts(self, span: ReadableSpan) -> bool:
        scope = span.instrumentation_scope
        scope_name = scope.name if scope is not None else ""
        if scope_name == SCOPE:
            return False  # learnkit's own spans (emit): never imported back
        if self._scopes is not None and not self._scopes(scope_name):
            return False
        if self._names is not None and not self._names(span.name):
            return False
        parent = span.parent
        if self._root_only and parent is not None and not parent.is_remote:
            return False
        return self._include is None or bool(self._include(span))

    def _op_type(self, span: ReadableSpan) -> str:
        if self._op_type_attribute is not None and span.attributes:
            v = span.attributes.get(self._op_type_attribute)
            if v is not None and v != "":
                return clean_text(v)
        return clean_text(span.name or "span")

    def _key(self, span: ReadableSpan) -> Any:
        if self._key_attribute is None or not span.attributes:
            return None
        return span.attributes.get(self._key_attribute)

    def _parent_op(self, span: ReadableSpan) -> Operation | None:
        parent = span.parent
        if parent is not None and not parent.is_remote:
            with self._lock:
                entry = self._open.get((parent.trace_id, parent.span_id))
            if entry is not None:
                return entry.op
            return None
        # A local root span inside learnkit-tracked work: that operation is its parent.
        return current_operation()

    # -- SpanProcessor ------------------------------------------------------------

    def on_start(self, span: Span, parent_context: otel_context.Context | None = None) -> None:
        """Remember the span; for a counted one, create its operation (never raises)."""
        try:
            sc = span.get_span_context()
            parent_op = self._parent_op(span)
            if self._counts(span):
                start = (span.start_time or time.time_ns()) * _NS
                op = Operation(self._op_type(span), self._key(span), None, start,
                               time.perf_counter(), parent_op)
                self._writer.live[op] = None  # stored as running if it runs long
                entry = _Open(op, True)
            else:
                entry = _Open(parent_op, False)
            with self._lock:
                self._open[(sc.trace_id, sc.span_id)] = entry
                if len(self._open) > MAX_OPEN:
                    self._forget_oldest()
        except Exception as exc:  # learnkit's faults never reach the traced code
            log.error("learnkit.otel: could not note a started span: %r", exc)

    def _forget_oldest(self) -> None:
        key = next(iter(self._open))
        entry = self._open.pop(key)
        if entry.counted and entry.op is not None:
            self._writer.live.pop(entry.op, None)

    def on_end(self, span: ReadableSpan) -> None:
        """Hand the ended span to the kit's loop as an operation (never raises, never blocks)."""
        try:
            sc = span.context
            entry = None
            if sc is not None:
                with self._lock:
                    entry = self._open.pop((sc.trace_id, sc.span_id), None)
            if entry is None:  # started before the processor was added
                if not self._counts(span):
                    return
                op = Operation(self._op_type(span), self._key(span), None,
                               (span.start_time or 0) * _NS, time.perf_counter(),
                               self._parent_op(span))
            elif not entry.counted or entry.op is None:
                return
            else:
                op = entry.op
            fields = self._fields(span)
            if self._writer.call_soon(functools.partial(self._finish, op, fields)):
                self.recorded += 1
        except Exception as exc:
            log.error("learnkit.otel: could not record an ended span: %r", exc)

    def _fields(self, span: ReadableSpan) -> dict[str, Any]:
        """Everything the operation needs from the span, read on the span's thread."""
        attrs: Mapping[str, Any] = span.attributes or {}
        exception: Mapping[str, Any] = {}
        for event in span.events:
            if event.name == "exception":
                exception = event.attributes or {}
        error_type = exception.get("exception.type") or attrs.get("error.type")
        message = exception.get("exception.message") or span.status.description
        if error_type in CANCELLED_TYPES and exception:
            outcome = "cancelled"
        elif span.status.status_code is StatusCode.ERROR:
            outcome = "failure"
        else:
            outcome = "success"
        match = self._attributes
        context = {k: _value(v) for k, v in attrs.items() if match is not None and match(k)}
        resource = span.resource.attributes if span.resource is not None else {}
        start = (span.start_time or 0) * _NS
        end = (span.end_time or span.start_time or 0) * _NS
        return {
            "op_type": self._op_type(span), "key": self._key(span), "outcome": outcome,
            "error_type": error_type, "message": message, "context": context,
            "service_version": resource.get("service.version"),
            "started_at": start, "ended_at": max(end, start),
        }

    def _finish(self, op: Operation, f: dict[str, Any]) -> None:
        """On the kit's loop: complete the operation and queue it."""
        writer = self._writer
        writer.live.pop(op, None)
        if not op.persisted:  # not yet stored as running: name and key may have changed
            op.op_type = f["op_type"]
            op.key = None if f["key"] is None else clean_text(f["key"])
        start, end = f["started_at"], f["ended_at"]
        if not (valid_time(start) and valid_time(end)):
            writer.reject(op, f"span {op.op_type!r} has no valid start and end time")
            return
        op.started_at = float(start)
        op.ended_at = float(end)
        op.duration = float(end - start)
        if f["context"]:
            op.add_context(f["context"])
        version = f["service_version"]
        if version and self._kit.release is None:
            attr = self._kit.config.learning.release_attribute
            if op.context is None or attr not in op.context:
                op.add_context({attr: str(version)})
        outcome = f["outcome"]
        op.outcome = outcome
        if outcome != "success":
            error_type = f["error_type"]
            if outcome == "failure":
                op.error_type = "Failure" if not error_type else clean_text(error_type)
                op.error_message = clean_message(f["message"])
            else:
                op.error_type = None if not error_type else clean_text(error_type)
        for observer in writer.observers:
            if isinstance(observer, Emitter):
                observer.skip(op)  # a span already: not sent back as one
        writer.submit(op)

    def shutdown(self) -> None:
        """Forget open spans (their operations stay as running, if stored)."""
        with self._lock:
            for entry in self._open.values():
                if entry.counted and entry.op is not None:
                    self._writer.live.pop(entry.op, None)
            self._open.clear()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Nothing is held here; ``await kit.flush()`` makes the operations durable."""
        return True


def processor(
    kit: Kit,
    *,
    op_type_attribute: str | None = None,
    key_attribute: str | None = None,
    attributes: Collection[str] = (),
    names: Iterable[str] | None = None,
    scopes: Iterable[str] | None = None,
    root_only: bool = False,
    include: Callable[[ReadableSpan], bool] | None = None,
) -> LearnkitSpanProcessor:
    """A ``SpanProcessor`` that records every counted span that ends as an operation.

    ``provider.add_span_processor(learnkit.otel.processor(kit))``.

    Args:
        kit: the open kit to record into.
        op_type_attribute: a span attribute to take the operation type from
            (default, or when the span lacks it: the span's name).
        key_attribute: a span attribute holding the work item (``key``).
        attributes: span attributes kept as context: exact names or ``fnmatch``
            patterns (``"llm.*"``). Nothing else is stored, so no high-cardinality
            ids or secrets reach the database by accident. Default: none.
        names: count only spans with these names (exact or patterns).
        scopes: count only spans of these instrumentation scopes
            (``"opentelemetry.instrumentation.httpx"``; exact or patterns).
        root_only: count only root spans (no parent, or a remote parent).
        include: a last test, ``include(span) -> bool``, for anything else.

    Outcome: an ``exception`` event of a cancellation type
    (:data:`CANCELLED_TYPES`) is ``cancelled``; else status ERROR is a
    ``failure`` and anything else ``success``. (``start_as_current_span``
    records only ``Exception`` subclasses, so a span it ends by cancellation
    looks like a success; ``with tracer.start_span(...)`` records them.) The
    last ``exception`` event gives ``error_type`` (``exception.type``, else
    the ``error.type`` attribute) and ``error_message`` (``exception.message``,
    else the status description). Times are the span's start and end. The parent is the
    operation of the nearest counted ancestor span in this process, or, for
    a root span, the learnkit operation running where it started. When the
    kit has no release, the resource's ``service.version`` is recorded as it.
    Which spans count is decided when a span starts (its name and the
    attributes given at start), and again at its end for spans started before
    the processor was added.
    """
    return LearnkitSpanProcessor(
        kit, op_type_attribute=op_type_attribute, key_attribute=key_attribute,
        attributes=attributes, names=names, scopes=scopes, root_only=root_only,
        include=include,
    )


# -- out: learnkit operations as spans -------------------------------------------------


def _attribute(v: Any) -> Any:
    """A context value as a span attribute (str, bool, int, float, or a list of one kind)."""
    if isinstance(v, (str, bool, int, float)):
        return v
    if isinstance(v, list) and v and all(type(x) is type(v[0]) for x in v) and isinstance(
            v[0], (str, bool, int, float)):
        return v
    import json

    return json.dumps(v, default=str, sort_keys=True)


class Emitter:
    """Sends learnkit's operations and threshold changes to a tracer provider; see :func:`emit`."""

    def __init__(
        self, kit: Kit, tracer_provider: trace.TracerProvider | None = None, *,
        prefix: str = "learnkit.", context: bool = True,
        outcomes: Collection[str] = ("success", "failure", "cancelled", "skipped"),
    ) -> None:
        from . import __version__

        provider = tracer_provider or trace.get_tracer_provider()
        self._tracer = provider.get_tracer(SCOPE, __version__)
        self._kit = kit
        self._writer: Writer = kit.database.recorder.writer
        self._prefix = prefix
        self._context = context
        self._outcomes = frozenset(outcomes)
        self._skip: set[int] = set()
        self._since = kit.now()
        self._emitted_changes: set[int] = set()
        self._tasks: set[asyncio.Task[int]] = set()
        #: Spans sent.
        self.spans = 0
        self._writer.observers.append(self)
        self._unsubscribe = kit.on_threshold_change(self._changed)

    def skip(self, op: Operation) -> None:
        """Do not send ``op`` (it came from a span)."""
        self._skip.add(id(op))

    def __call__(self, ops: Sequence[Operation]) -> None:
        """The writer's observer: one span per completed operation (on the loop)."""
        p = self._prefix
        root = otel_context.Context()
        for op in ops:
            if self._skip and id(op) in self._skip:
                self._skip.discard(id(op))
                continue
            if op.outcome not in self._outcomes:
                continue
            start = int(op.started_at * 1e9)
            end = int((op.ended_at if op.ended_at is not None else op.started_at) * 1e9)
            attrs: dict[str, Any] = {f"{p}op_type": op.op_type, f"{p}outcome": op.outcome}
            if op.db_id is not None:
                attrs[f"{p}id"] = op.db_id
            if op.parent is not None and op.parent.db_id is not None:
                attrs[f"{p}parent_id"] = op.parent.db_id
            if op.key is not None:
                attrs[f"{p}key"] = op.key
            if op.duration is not None:
                attrs[f"{p}duration"] = op.duration
            if op.admission is not None:
                attrs[f"{p}explored"] = True
            if op.error_type is not None:
                attrs[f"{p}error_type"] = op.error_type
            if self._context and op.context:
                for k, v in op.context.items():
                    if v is not None:
                        attrs[f"{p}context.{k}"] = _attribute(v)
            if op.outcome == "failure":
                attrs["error.type"] = op.error_type or "Failure"
            span = self._tracer.start_span(op.op_type, context=root, attributes=attrs,
                                           start_time=start)
            if op.outcome == "failure":
                span.add_event("exception", {
                    "exception.type": op.error_type or "Failure",
                    "exception.message": op.error_message or "",
                }, timestamp=end)
                span.set_status(Status(StatusCode.ERROR, op.error_message))
            span.end(end_time=max(end, start))
            self.spans += 1

    # -- threshold changes --------------------------------------------------------

    def _changed(self) -> None:
        try:
            task = asyncio.get_running_loop().create_task(self._emit_changes_quietly())
        except RuntimeError:
            return
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _emit_changes_quietly(self) -> int:
        try:
            return await self.emit_changes()
        except Exception as exc:  # e.g. the kit closed meanwhile: never an unhandled error
            log.warning("learnkit.otel: threshold changes not sent: %r", exc)
            return 0

    async def emit_changes(self) -> int:
        """Send threshold changes recorded since this emitter was made and not sent yet,
        each as a span ``learnkit.threshold_change`` with one event
        (``learnkit.threshold.change`` or ``learnkit.threshold.rollback``); returns how many.

        Called by itself after every change; call it to be sure before a shutdown.
        """
        await self._kit.controller.drain()  # changes by hand are recorded in a task
        sent = 0
        for change in await self._kit.controller.history():
            if change.id in self._emitted_changes or change.at < self._since:
                continue
            self._emitted_changes.add(change.id)
            self._emit_change(change)
            sent += 1
        return sent

    def _emit_change(self, c: ThresholdChange) -> None:
        p = self._prefix
        at = int(c.at * 1e9)
        attrs: dict[str, Any] = {
            f"{p}threshold.name": c.name, f"{p}threshold.new_value": c.new_value,
            f"{p}threshold.kind": c.kind, f"{p}threshold.change_id": c.id,
        }
        if c.old_value is not None:
            attrs[f"{p}threshold.old_value"] = c.old_value
        if c.confidence is not None:
            attrs[f"{p}threshold.confidence"] = c.confidence
        if c.reason:
            attrs[f"{p}threshold.reason"] = c.reason
        event = f"{p}threshold.rollback" if c.kind == "rollback" else f"{p}threshold.change"
        span = self._tracer.start_span(f"{p}threshold_change", context=otel_context.Context(),
                                       attributes=attrs, start_time=at)
        span.add_event(event, attrs, timestamp=at)
        span.end(end_time=at)
        self.spans += 1

    def close(self) -> None:
        """Stop sending."""
        if self in self._writer.observers:
            self._writer.observers.remove(self)
        self._unsubscribe()


def emit(
    kit: Kit, tracer_provider: trace.TracerProvider | TracerProvider | None = None, *,
    prefix: str = "learnkit.", context: bool = True,
    outcomes: Collection[str] = ("success", "failure", "cancelled", "skipped"),
) -> Emitter:
    """Send every operation ``kit`` records to ``tracer_provider`` as a span.

    Default provider: the global one. Each operation becomes a span named by
    its op type, with its own start and end times (it is sent when written,
    within ``storage.flush_interval``), instrumentation scope ``learnkit``.
    A failure follows the semantic conventions for exceptions: status ERROR
    with the message, ``error.type`` and an ``exception`` event with
    ``exception.type`` (learnkit's ``module.QualName``, fully qualified) and
    ``exception.message``. learnkit's own fields are attributes under
    ``prefix``: ``op_type``, ``outcome``, ``key``, ``id``, ``parent_id``,
    ``duration``, ``explored``, ``error_type`` and ``context.<name>``
    (``context=False`` leaves context out). Spans carry no parent: learnkit's
    nesting is ``learnkit.parent_id`` pointing at ``learnkit.id``.

    Threshold changes and rollbacks become ``learnkit.threshold_change``
    spans with one event each (see :meth:`Emitter.emit_changes`). Operations
    that :func:`processor` made from spans are not sent back.
    """
    return Emitter(kit, tracer_provider, prefix=prefix, context=context, outcomes=outcomes)
