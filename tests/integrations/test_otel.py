"""OpenTelemetry in and out: spans become operations; operations become spans."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import learnkit
import learnkit.otel
from tests.conftest import rows, write_config


class QuotaError(Exception):
    """The planted failure."""


def resize(tracer: trace.Tracer, image: int, size: int) -> None:
    """Real code traced with the OpenTelemetry API only: no learnkit in sight."""
    with tracer.start_as_current_span("resize", attributes={
            "image.size": size, "image.id": f"img-{image}", "user.token": "s3cret"}):
        with tracer.start_as_current_span("load"):
            pass
        if size > 7 and random.random() < 0.8:
            raise QuotaError(f"quota exceeded for image {image} at size {size}")


async def test_spans_alone_reveal_the_planted_pattern(tmp_path: Path) -> None:
    """Instrumented with the SDK alone; the processor turns spans (ended on worker
    threads) into operations, and generate_summary finds size > 7."""
    random.seed(7)
    provider = TracerProvider(resource=Resource.create({"service.version": "2.0.1"}))
    async with learnkit.open(write_config(tmp_path)) as kit:
        proc = learnkit.otel.processor(kit, attributes=["image.size"], key_attribute="image.id")
        provider.add_span_processor(proc)
        tracer = provider.get_tracer("shop.images")

        def work(i: int) -> None:
            try:
                resize(tracer, i, random.randint(1, 12))
            except QuotaError:
                pass

        with ThreadPoolExecutor(4) as pool:  # spans end on four threads at once
            list(pool.map(work, range(400)))
        await asyncio.sleep(0)  # the loop takes the hand-overs
        assert await kit.flush(timeout=10)
        summary = await kit.insights.generate_summary(days=1)
        assert proc.recorded == 800

    by_type = {t: r.n for t, r in summary["rates_by_type"].items()}
    assert by_type == {"resize": 400, "load": 400}
    found = [p for p in summary["failure_patterns"]
             if p.kind == "context" and p.attribute == "image.size" and p.op_type == "resize"]
    assert found, [p.description for p in summary["failure_patterns"]]
    assert found[0].condition == ">" and found[0].value == 7
    clusters = [p for p in summary["failure_patterns"] if p.kind == "error_cluster"]
    assert clusters[0].error_type == f"{__name__}.QuotaError"

    stored = rows(tmp_path / "learnkit.db")
    resized = [r for r in stored if r["op_type"] == "resize"]
    loads = [r for r in stored if r["op_type"] == "load"]
    ctx = json.loads(resized[0]["context"])
    # only the allow-listed attribute, plus the release from the resource
    assert ctx == {"image.size": ctx["image.size"], "release": "2.0.1"}
    assert "s3cret" not in json.dumps(stored)
    assert all(r["key"].startswith("img-") for r in resized)
    # parent span -> parent_id; span times -> the operation's times
    ids = {r["id"] for r in resized}
    assert all(r["parent_id"] in ids for r in loads)
    for r in resized:
        assert r["ended_at"] >= r["started_at"]
        assert r["duration"] == pytest.approx(r["ended_at"] - r["started_at"], abs=1e-6)
    failed = [r for r in resized if r["outcome"] == "failure"]
    assert failed and all(r["error_message"].startswith("quota exceeded") for r in failed)


async def test_which_spans_count(tmp_path: Path) -> None:
    provider = TracerProvider()
    async with learnkit.open(write_config(tmp_path)) as kit:
        provider.add_span_processor(learnkit.otel.processor(kit, names=["job.*"], root_only=True))
        provider.add_span_processor(learnkit.otel.processor(kit, scopes=["billing"],
                                                            op_type_attribute="op"))
        jobs = provider.get_tracer("jobs")
        billing = provider.get_tracer("billing")
        with jobs.start_as_current_span("job.run"), jobs.start_as_current_span("job.step"):
            pass  # job.step is not a root span
        with jobs.start_as_current_span("other"):
            pass
        with billing.start_as_current_span("charge", attributes={"op": "billing.charge"}):
            pass
        # start_span's context manager records BaseExceptions too
        with pytest.raises(asyncio.CancelledError), jobs.start_span("job.cancelled"):
            raise asyncio.CancelledError
        assert await kit.flush(timeout=10)
    got = sorted((r["op_type"], r["outcome"], r["error_type"])
                 for r in rows(tmp_path / "learnkit.db"))
    assert got == [("billing.charge", "success", None),
                   ("job.cancelled", "cancelled", "asyncio.exceptions.CancelledError"),
                   ("job.run", "success", None)]


async def test_a_long_span_is_stored_running_then_completed(tmp_path: Path) -> None:
    """A parent still open when its child is written gets a running row, then its end."""
    provider = TracerProvider()
    async with learnkit.open(write_config(tmp_path)) as kit:
        provider.add_span_processor(learnkit.otel.processor(kit))
        tracer = provider.get_tracer("t")
        with tracer.start_as_current_span("outer"):
            with tracer.start_as_current_span("inner"):
                pass
            await asyncio.sleep(0)
            assert await kit.flush(timeout=10)  # inner written, outer still open
            (outer,) = rows(tmp_path / "learnkit.db", "op_type = 'outer'")
            assert outer["outcome"] == "running"
        await asyncio.sleep(0)
        assert await kit.flush(timeout=10)
    (outer,) = rows(tmp_path / "learnkit.db", "op_type = 'outer'")
    (inner,) = rows(tmp_path / "learnkit.db", "op_type = 'inner'")
    assert outer["outcome"] == "success" and inner["parent_id"] == outer["id"]


async def test_a_root_span_inside_tracked_work_is_its_child(tmp_path: Path) -> None:
    provider = TracerProvider()
    async with learnkit.open(write_config(tmp_path)) as kit:
        provider.add_span_processor(learnkit.otel.processor(kit))
        tracer = provider.get_tracer("t")
        async with learnkit.track("handle"):
            with tracer.start_as_current_span("db.query"):
                pass
        await kit.flush(timeout=10)
    (handle,) = rows(tmp_path / "learnkit.db", "op_type = 'handle'")
    (query,) = rows(tmp_path / "learnkit.db", "op_type = 'db.query'")
    assert query["parent_id"] == handle["id"]


async def test_spans_after_the_kit_closed_are_counted_not_raised(tmp_path: Path) -> None:
    provider = TracerProvider()
    async with learnkit.open(write_config(tmp_path)) as kit:
        provider.add_span_processor(learnkit.otel.processor(kit))
    tracer = provider.get_tracer("t")
    done = threading.Event()

    def late() -> None:
        with tracer.start_as_current_span("late"):
            pass
        done.set()

    threading.Thread(target=late).start()
    assert done.wait(5)
    assert kit.stats.dropped == 1


# -- out ---------------------------------------------------------------------------------


class Boom(RuntimeError):
    pass


async def test_operations_become_spans_with_the_exception_conventions(tmp_path: Path) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    async with learnkit.open(write_config(tmp_path), release="1.4.2") as kit:
        emitter = learnkit.otel.emit(kit, provider)
        # the processor on the same provider: learnkit's spans are not imported back,
        # and imported spans are not sent again
        provider.add_span_processor(learnkit.otel.processor(kit))

        @learnkit.tracked("process_issue", key=lambda n: f"issue-{n}",
                          context=lambda n: {"complexity": n})
        async def process_issue(n: int) -> None:
            async with learnkit.track("run_tests"):
                if n > 5:
                    raise Boom(f"tests failed for issue {n}")

        for n in (3, 9):
            try:
                await process_issue(n)
            except Boom:
                pass
        with provider.get_tracer("app").start_as_current_span("from.otel"):
            pass
        await asyncio.sleep(0)
        assert await kit.flush(timeout=10)
        emitter.close()

    spans = {(s.name, s.attributes["learnkit.key"] if s.attributes and "learnkit.key"
              in s.attributes else None): s for s in exporter.get_finished_spans()
             if s.instrumentation_scope and s.instrumentation_scope.name == "learnkit"}
    assert len(exporter.get_finished_spans()) == 5  # 4 from learnkit + the app's own
    failed = spans[("process_issue", "issue-9")]
    attrs = failed.attributes or {}
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.status.description == "tests failed for issue 9"
    assert attrs["error.type"] == f"{__name__}.Boom"
    (event,) = failed.events
    assert event.name == "exception"
    assert event.attributes == {"exception.type": f"{__name__}.Boom",
                                "exception.message": "tests failed for issue 9"}
    assert attrs["learnkit.outcome"] == "failure"
    assert attrs["learnkit.op_type"] == "process_issue"
    assert attrs["learnkit.context.complexity"] == 9
    assert attrs["learnkit.context.release"] == "1.4.2"
    assert failed.start_time is not None and failed.end_time is not None
    assert failed.end_time >= failed.start_time
    ok = spans[("process_issue", "issue-3")]
    assert ok.status.status_code is StatusCode.UNSET and "error.type" not in (ok.attributes or {})
    child = next(s for (name, _), s in spans.items() if name == "run_tests"
             and (s.attributes or {})["learnkit.outcome"] == "failure")
    assert (child.attributes or {})["learnkit.parent_id"] == attrs["learnkit.id"]


async def test_threshold_changes_and_rollbacks_become_span_events(tmp_path: Path) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    async with learnkit.open(write_config(tmp_path)) as kit:
        emitter = learnkit.otel.emit(kit, provider)
        await kit.config.update(max_complexity=7)
        for _ in range(50):
            await asyncio.sleep(0)
        await emitter.emit_changes()
        history = await kit.controller.history()
    spans = [s for s in exporter.get_finished_spans() if s.name == "learnkit.threshold_change"]
    assert len(spans) == len(history) == 1
    (event,) = spans[0].events
    assert event.name == "learnkit.threshold.change"
    attrs = event.attributes or {}
    assert attrs["learnkit.threshold.name"] == "max_complexity"
    assert (attrs["learnkit.threshold.old_value"], attrs["learnkit.threshold.new_value"]) == (8, 7)
    assert attrs["learnkit.threshold.kind"] == "manual"


def test_without_the_sdk_the_import_error_names_the_extra() -> None:
    code = ("import sys\nsys.modules['opentelemetry'] = None\n"
            "try:\n    import learnkit.otel\nexcept ImportError as e:\n    print(e)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=Path(__file__).resolve().parents[2])
    assert "pip install 'learnkit[otel]'" in proc.stdout, proc.stdout + proc.stderr
