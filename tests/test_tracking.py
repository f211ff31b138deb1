"""Every outcome path of @tracked, track() and OperationTracker, against real SQLite."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import learnkit
from learnkit import track, tracked

from .conftest import rows

#: Every test here runs on each storage backend (see tests/conftest.py).
pytestmark = pytest.mark.usefixtures("backend")


class DomainError(Exception):
    """A user exception with a module-qualified name."""

    class Inner(Exception):
        """A nested exception class, to check the qualified name."""


@tracked
async def ok_async(x: int) -> int:
    return x * 2


@tracked("process_issue", key=lambda n, **_: f"issue-{n}", context=lambda n, **_: {"complexity": n})
async def process_issue(n: int, *, fail: bool = False) -> str:
    if fail:
        raise DomainError.Inner(f"complexity {n} too high")
    return "done"


@tracked
def ok_sync(x: int) -> int:
    return x + 1


@tracked("sync_fail")
def fail_sync() -> None:
    raise KeyError("missing")


async def last(kit: learnkit.Kit) -> dict[str, object]:
    await kit.flush()
    return rows(kit.database.path)[-1]


class TestDecoratorAsync:
    async def test_success_records_type_from_qualname(self, kit: learnkit.Kit) -> None:
        """A bare decorator names the operation after the function and records success."""
        assert await ok_async(2) == 4
        row = await last(kit)
        assert row["op_type"] == "ok_async"
        assert row["outcome"] == "success"
        assert row["error_type"] is None
        assert row["duration"] >= 0 and row["ended_at"] >= row["started_at"]

    async def test_failure_propagates_unchanged_with_qualified_name(self, kit: learnkit.Kit) -> None:
        """The same exception object escapes; module.QualName and str(exc) are stored."""
        with pytest.raises(DomainError.Inner) as info:
            await process_issue(9, fail=True)
        assert str(info.value) == "complexity 9 too high"
        row = await last(kit)
        assert row["outcome"] == "failure"
        assert row["error_type"] == "tests.test_tracking.DomainError.Inner"
        assert row["error_message"] == "complexity 9 too high"
        assert row["key"] == "issue-9"
        assert row["context"] == '{"complexity":9}'

    async def test_builtin_exception_has_no_module(self, kit: learnkit.Kit) -> None:
        """Builtins are recorded by bare name (ValueError, not builtins.ValueError)."""

        @tracked
        async def bad() -> None:
            raise ValueError("nope")

        with pytest.raises(ValueError):
            await bad()
        assert (await last(kit))["error_type"] == "ValueError"

    async def test_asyncio_cancellation_is_cancelled(self, kit: learnkit.Kit) -> None:
        """Task.cancel() records cancelled, not failure, and CancelledError propagates."""
        started = asyncio.Event()

        @tracked("slow")
        async def slow() -> None:
            started.set()
            await asyncio.sleep(10)

        task = asyncio.create_task(slow())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        row = await last(kit)
        assert (row["op_type"], row["outcome"]) == ("slow", "cancelled")

    async def test_anyio_cancel_scope_is_cancelled(self, kit: learnkit.Kit) -> None:
        """A timeout through an anyio cancel scope records cancelled."""

        @tracked("scoped")
        async def scoped() -> None:
            await anyio.sleep(10)

        with anyio.move_on_after(0.01):
            await scoped()
        assert (await last(kit))["outcome"] == "cancelled"

    async def test_nested_operations_record_parent(self, kit: learnkit.Kit) -> None:
        """An operation started inside another stores the outer one's id as parent_id."""

        @tracked("outer")
        async def outer() -> None:
            await ok_async(1)
            async with track("inner_block"):
                await ok_async(2)

        await outer()
        await kit.flush()
        by_type = {}
        for r in rows(kit.database.path):
            by_type.setdefault(r["op_type"], []).append(r)
        outer_id = by_type["outer"][0]["id"]
        block = by_type["inner_block"][0]
        assert block["parent_id"] == outer_id
        parents = sorted(r["parent_id"] for r in by_type["ok_async"])
        assert parents == sorted([outer_id, block["id"]])
        assert by_type["outer"][0]["parent_id"] is None

    async def test_key_or_context_callable_failure_is_not_raised(
        self, kit: learnkit.Kit, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A broken key= callable is learnkit's fault: logged, and the call still runs."""

        @tracked("k", key=lambda: 1 / 0)
        async def f() -> int:
            return 5

        assert await f() == 5
        assert (await last(kit))["outcome"] == "success"
        assert "key callable of k raised" in caplog.text

    async def test_context_keys_that_refuse_comparison_are_not_raised(
        self, kit: learnkit.Kit
    ) -> None:
        """Keys whose == and != raise (as SQL clause objects do), and a mapping whose
        truth cannot be told: the call runs, context is kept as text."""

        class Clause:
            def __eq__(self, other: object) -> bool:
                raise TypeError("Boolean value of this clause is not defined")

            __ne__ = __eq__  # type: ignore[assignment]
            __hash__ = object.__hash__

            def __str__(self) -> str:
                return "users.id"

        class Undecided(dict[str, int]):
            def __bool__(self) -> bool:
                raise ValueError("ambiguous")

        @tracked("clause", context=lambda x: {Clause(): x})
        async def f(x: int) -> str:
            return "ran"

        assert await f(1) == "ran"
        with track("block") as op:
            op.add_context({Clause(): 2})
        kit.record("rec", outcome="success", started_at=1000.0, context=Undecided(a=1))
        assert await kit.flush()
        db = kit.database.path
        assert json.loads(rows(db, "op_type = 'clause'")[0]["context"]) == {"users.id": 1}
        assert json.loads(rows(db, "op_type = 'block'")[0]["context"]) == {"users.id": 2}
        assert "<context>" in rows(db, "op_type = 'rec'")[0]["context"]

    async def test_unprintable_exception_message(self, kit: learnkit.Kit) -> None:
        """An exception whose __str__ raises is still recorded and still propagates."""

        class Weird(Exception):
            def __str__(self) -> str:
                raise RuntimeError("no str")

        @tracked("weird")
        async def f() -> None:
            raise Weird()

        with pytest.raises(Weird):
            await f()
        row = await last(kit)
        assert row["outcome"] == "failure"
        assert "unprintable" in row["error_message"]


class TestDecoratorSync:
    async def test_sync_success(self, kit: learnkit.Kit) -> None:
        """Sync functions keep their result and record success."""
        assert ok_sync(1) == 2
        row = await last(kit)
        assert (row["op_type"], row["outcome"]) == ("ok_sync", "success")

    async def test_sync_failure(self, kit: learnkit.Kit) -> None:
        """A sync exception propagates and is recorded as failure."""
        with pytest.raises(KeyError):
            fail_sync()
        row = await last(kit)
        assert (row["outcome"], row["error_type"]) == ("failure", "KeyError")

    @pytest.mark.parametrize("exc", [KeyboardInterrupt, SystemExit])
    async def test_interrupts_are_cancelled(self, kit: learnkit.Kit, exc: type[BaseException]) -> None:
        """KeyboardInterrupt and SystemExit record cancelled and propagate."""

        @tracked("interrupted")
        def f() -> None:
            raise exc()

        with pytest.raises(exc):
            f()
        row = await last(kit)
        assert (row["outcome"], row["error_type"]) == ("cancelled", exc.__name__)

    async def test_sync_in_worker_threads(self, kit: learnkit.Kit) -> None:
        """Sync functions run in threads record from those threads too."""
        await asyncio.gather(*(asyncio.to_thread(ok_sync, i) for i in range(50)))
        await kit.flush()
        assert len(rows(kit.database.path, "op_type = 'ok_sync'")) == 50

    def test_generators_are_refused(self) -> None:
        """Generators would be mis-timed, so decorating one is a clear TypeError."""
        with pytest.raises(TypeError, match="async generator"):

            @tracked
            async def agen():  # type: ignore[no-untyped-def]
                yield 1

        with pytest.raises(TypeError, match="generator"):

            @tracked("g")
            def gen():  # type: ignore[no-untyped-def]
                yield 1


class TestNoKit:
    async def test_runs_untracked_with_one_warning(self, caplog: pytest.LogCaptureFixture) -> None:
        """Without an open kit the function still runs, and one warning is logged."""
        from learnkit._tracking import _State

        _State.warned = False
        caplog.set_level(logging.WARNING, logger="learnkit")
        assert await ok_async(3) == 6
        assert ok_sync(3) == 4
        async with track("nothing") as op:
            op.set(a=1)
        warnings = [r for r in caplog.records if "untracked" in r.getMessage()]
        assert len(warnings) == 1


class TestTrackBlock:
    async def test_a_block_in_a_generator_closed_by_another_task(
        self, kit: learnkit.Kit
    ) -> None:
        """An async generator holding a track() block, stepped by one task and closed
        by another: nothing raises into the user's code and the record is kept."""

        async def stream() -> Any:
            async with track("streamed"):
                yield 1
                yield 2

        gen = stream()
        await asyncio.create_task(gen.__anext__())  # entered in that task's context
        await gen.aclose()  # exited in this one
        assert await kit.flush()
        assert [r["outcome"] for r in rows(kit.database.path, "op_type = 'streamed'")] == [
            "cancelled"]
        assert learnkit.current_operation() is None

    async def test_block_success_with_context(self, kit: learnkit.Kit) -> None:
        """Keyword arguments and op.set() become context; key is stored."""
        async with track("run_tests", key="issue-123", complexity=7) as op:
            op.set(files_changed=3)
        row = await last(kit)
        assert row["outcome"] == "success"
        assert row["key"] == "issue-123"
        assert row["context"] == '{"complexity":7,"files_changed":3}'

    async def test_fail_without_raising(self, kit: learnkit.Kit) -> None:
        """op.fail() records a failure with the given type and message."""
        async with track("run_tests") as op:
            op.fail("TestFailure", "Unit tests failed")
        row = await last(kit)
        assert (row["outcome"], row["error_type"], row["error_message"]) == (
            "failure", "TestFailure", "Unit tests failed")

    async def test_explicit_fail_survives_a_following_raise(self, kit: learnkit.Kit) -> None:
        """op.fail(...) then raise: the explicit type and message are recorded; the error propagates."""
        with pytest.raises(RuntimeError, match="abort"):
            async with track("run_tests") as op:
                op.fail("TestFailure", "Unit tests failed")
                raise RuntimeError("abort")
        row = await last(kit)
        assert (row["outcome"], row["error_type"], row["error_message"]) == (
            "failure", "TestFailure", "Unit tests failed")

    async def test_exception_in_block(self, kit: learnkit.Kit) -> None:
        """An exception escaping the block propagates and is recorded."""
        with pytest.raises(RuntimeError, match="boom"):
            async with track("blk"):
                raise RuntimeError("boom")
        row = await last(kit)
        assert (row["outcome"], row["error_type"], row["error_message"]) == (
            "failure", "RuntimeError", "boom")

    async def test_plain_with(self, kit: learnkit.Kit) -> None:
        """track() also works as a synchronous context manager."""
        with track("sync_block", key="a") as op:
            op.set(x=1)
        row = await last(kit)
        assert (row["op_type"], row["outcome"], row["key"]) == ("sync_block", "success", "a")

    async def test_cancelled_block(self, kit: learnkit.Kit) -> None:
        """Cancellation inside a block records cancelled."""

        async def body() -> None:
            async with track("blk_cancel"):
                await asyncio.sleep(10)

        t = asyncio.create_task(body())
        await asyncio.sleep(0.01)
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        assert (await last(kit))["outcome"] == "cancelled"

    async def test_current_operation(self, kit: learnkit.Kit) -> None:
        """current_operation() is the innermost tracked operation, and None outside."""
        assert learnkit.current_operation() is None

        @tracked("with_handle")
        async def f() -> None:
            op = learnkit.current_operation()
            assert op is not None
            op.set(found=True)

        await f()
        assert (await last(kit))["context"] == '{"found":true}'


class TestBadContext:
    async def test_unserialisable_values_are_kept_as_repr(self, kit: learnkit.Kit) -> None:
        """Objects and NaN never raise: they are stored as their repr and counted."""

        class Thing:
            def __repr__(self) -> str:
                return "<Thing>"

        async with track("ctx", obj=Thing(), bad=math.nan, fine=2):
            pass
        row = await last(kit)
        assert row["context"] == '{"obj":"<Thing>","bad":"nan","fine":2}'
        assert kit.stats.context_coerced == 1


class TestOperationTracker:
    async def test_spec_construction_and_outcomes(self, kit: learnkit.Kit) -> None:
        """OperationTracker(kit.database, logger) works as in the specification."""
        tracker = learnkit.OperationTracker(kit.database, logging.getLogger("x"))
        a = tracker.start_operation("process_issue", "issue-123")
        tracker.complete_operation(a, success=True)
        b = tracker.start_operation("process_issue", "issue-124", context={"complexity": 9})
        tracker.complete_operation(b, success=False, error_type="TestFailure",
                                   error_message="Unit tests failed")
        c = kit.tracker.start_operation("process_issue", "issue-125")
        kit.tracker.complete_operation(c, success=False, cancelled=True)
        await kit.flush()
        got = [(r["key"], r["outcome"], r["error_type"]) for r in rows(kit.database.path)]
        assert got == [
            ("issue-123", "success", None),
            ("issue-124", "failure", "TestFailure"),
            ("issue-125", "cancelled", None),
        ]
        assert tracker.in_flight == 0

    async def test_unknown_id_is_a_clear_error(self, kit: learnkit.Kit) -> None:
        """Completing an id twice names the problem and the fix."""
        op_id = kit.tracker.start_operation("x")
        kit.tracker.complete_operation(op_id, success=True)
        with pytest.raises(learnkit.UnknownOperationError, match="start_operation"):
            kit.tracker.complete_operation(op_id, success=True)

    def test_needs_a_kit_database(self, tmp_path: Path) -> None:
        """Passing something other than kit.database is a TypeError that says what to pass."""
        with pytest.raises(TypeError, match="kit.database"):
            learnkit.OperationTracker(str(tmp_path / "x.db"), None)


class TestRecord:
    async def test_backfill_with_explicit_times(self, kit: learnkit.Kit) -> None:
        """kit.record stores the given times, outcome, error and context."""
        kit.record("process_issue", outcome="failure", started_at=1000.0, ended_at=1060.0,
                   key="issue-9", error_type="TestFailure", error_message="m",
                   context={"complexity": 9})
        row = await last(kit)
        assert (row["started_at"], row["ended_at"], row["duration"]) == (1000.0, 1060.0, 60.0)
        assert (row["outcome"], row["error_type"], row["context"]) == (
            "failure", "TestFailure", '{"complexity":9}')

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"outcome": "ok", "started_at": 1.0}, "not one of"),
            ({"outcome": "success", "started_at": "yesterday"}, "started_at"),
            ({"outcome": "success", "started_at": 10.0, "ended_at": 5.0}, "before"),
            ({"outcome": "success", "started_at": math.inf}, "finite"),
        ],
    )
    async def test_bad_input_is_refused_and_nothing_stored(
        self, kit: learnkit.Kit, kwargs: dict[str, object], message: str
    ) -> None:
        """An invalid record raises ValueError naming the argument; nothing is written."""
        with pytest.raises(ValueError, match=message):
            kit.record("x", **kwargs)  # type: ignore[arg-type]
        await kit.flush()
        assert rows(kit.database.path) == []


class TestKeyAndContextCallables:
    """key= and context= see the call bound to the signature, defaults applied."""

    async def test_context_sees_a_default_argument(self, kit: learnkit.Kit) -> None:
        """context=lambda number, model: ... gets model's default when the caller leaves it out."""

        @tracked("gen", key=lambda number: f"n-{number}",
                 context=lambda number, model: {"model": model, "number": number})
        async def generate(number: int, model: str = "small") -> int:
            return number

        assert await generate(3) == 3
        row = await last(kit)
        assert row["key"] == "n-3"
        assert json.loads(row["context"]) == {"model": "small", "number": 3}

    async def test_keyword_call_and_positional_callable(self, kit: learnkit.Kit) -> None:
        """A callable that is not named like the function gets every argument in order."""

        @tracked("gen", context=lambda *args, **kw: {"args": list(args), "kw": kw})
        def generate(number: int, model: str = "small", *, retries: int = 2) -> int:
            return number

        assert generate(number=4, model="big") == 4
        await kit.flush()
        row = await last(kit)
        assert json.loads(row["context"]) == {"args": [4, "big"], "kw": {"retries": 2}}


class TestCleaning:
    async def test_surrogates_replaced_everywhere(self, kit: learnkit.Kit) -> None:
        bad = b"report-\xff.txt".decode("utf-8", "surrogateescape")
        with pytest.raises(OSError):
            async with track("open", key=bad, name=bad):
                raise OSError(f"cannot open {bad}")
        row = await last(kit)
        assert row["key"] == "report-\ufffd.txt"
        assert row["error_message"] == "cannot open report-\ufffd.txt"
        assert json.loads(str(row["context"])) == {"name": "report-\ufffd.txt"}

    async def test_json_structures_are_kept(self, kit: learnkit.Kit) -> None:
        async with track("nested", files=["a", "b"], meta={"n": 1}):
            pass
        row = await last(kit)
        assert json.loads(str(row["context"])) == {"files": ["a", "b"], "meta": {"n": 1}}


class _Hostile:
    """A value whose repr, str, hash and equality all raise."""

    def __repr__(self) -> str:
        raise RuntimeError("repr")

    __str__ = __repr__

    def __hash__(self) -> int:
        raise RuntimeError("hash")


def _values() -> st.SearchStrategy[object]:
    scalars = st.one_of(
        st.none(), st.booleans(), st.integers(), st.integers(min_value=10**309),
        st.floats(), st.text(st.characters(codec=None, exclude_categories=())),
        st.binary(), st.decimals(), st.uuids(), st.builds(_Hostile), st.builds(object),
        st.builds(lambda: 10**5000), st.complex_numbers(),
    )
    return st.recursive(
        scalars,
        lambda inner: st.one_of(st.lists(inner, max_size=3), st.tuples(inner),
                                st.dictionaries(st.text(max_size=3), inner, max_size=3)),
        max_leaves=6,
    )


class TestArbitraryValues:
    """Whatever a caller passes, the writer survives and every other record lands."""

    def test_every_entry_point(self, config_path: Path) -> None:
        runner = asyncio.Runner()
        cm = learnkit.open(config_path)
        kit = runner.run(cm.__aenter__())
        good = 0

        @settings(max_examples=100, deadline=None,
                  suppress_health_check=[HealthCheck.too_slow])
        @given(st.lists(_values(), min_size=8, max_size=8))
        def example(v: list[object]) -> None:
            nonlocal good

            async def body() -> None:
                nonlocal good

                @tracked(v[0], key=lambda: v[1], context=lambda: {"a": v[2]})  # type: ignore[arg-type]
                async def fn() -> None:
                    learnkit.current_operation().set(b=v[3])  # type: ignore[union-attr]

                await fn()
                with contextlib.suppress(Exception):
                    async with track(v[4], key=v[5], c=v[6]) as op:  # type: ignore[arg-type]
                        op.fail(v[7], v[0])  # type: ignore[arg-type]
                        raise ValueError(v[1])
                op_id = kit.tracker.start_operation(v[2], v[3], context={v[4]: v[5]}  # type: ignore[arg-type, dict-item]
                                                    if _hashable(v[4]) else None)
                kit.tracker.complete_operation(op_id, False, v[6], v[7])  # type: ignore[arg-type]
                with contextlib.suppress(ValueError):
                    kit.record(v[0], outcome="failure", started_at=1000.0, key=v[1],  # type: ignore[arg-type]
                               error_type=v[2], error_message=v[3], context={"x": v[4]})  # type: ignore[arg-type]
                with contextlib.suppress(ValueError):
                    kit.record("t", outcome="success", started_at=v[5], duration=v[6])  # type: ignore[arg-type]
                kit.record("good", outcome="success", started_at=2000.0)
                good += 1

            runner.run(body())

        try:
            example()
            assert runner.run(kit.flush(timeout=60))
            stats = kit.stats
            assert stats.dropped == 0 and stats.queued == 0
            assert stats.write_errors == 0, stats.last_error
        finally:
            runner.run(cm.__aexit__(None, None, None))
            runner.close()
        assert len(rows(config_path.parent / "learnkit.db", "op_type = 'good'")) == good


def _hashable(v: object) -> bool:
    try:
        hash(v)
    except Exception:
        return False
    return True
