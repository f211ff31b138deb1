"""Rollups: the per-store Encoder, Aggregate, and window_stats (rollups + edge rows)."""

from __future__ import annotations

import json
import math
import random
import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import learnkit
from learnkit._model import HOUR
from learnkit._storage import rollup
from learnkit._storage.protocol import WindowStats
from learnkit._storage.rollup import MAX_STRINGS, OTHER, PAIR_SEP, Aggregate, Encoder, HeavyHitters

from ..conftest import write_config


def context_values(db: Path, attr: str) -> set[str]:
    conn = sqlite3.connect(db)
    try:
        return {v for (v,) in conn.execute(
            "SELECT DISTINCT value FROM context_rollup WHERE attr = ?", [attr])}
    finally:
        conn.close()


def singles(items: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    return tuple(i for i in items if PAIR_SEP not in i[0])


class TestTwoKits:
    async def test_cardinality_state_is_per_store(self, tmp_path: Path) -> None:
        """Kit A's full summary of strings does not make kit B store new ones as <other>."""
        a_dir, b_dir = tmp_path / "a", tmp_path / "b"
        a_dir.mkdir()
        b_dir.mkdir()
        t = 1_000_000.0
        async with learnkit.open(write_config(a_dir)) as kit_a:
            for i in range(MAX_STRINGS + 10):
                kit_a.record("deploy", outcome="success", started_at=t + i,
                             context={"team": f"team-{i}"})
            await kit_a.flush()
            async with learnkit.open(write_config(b_dir)) as kit_b:
                for i in range(5):
                    kit_b.record("deploy", outcome="failure", started_at=t + i,
                                 context={"team": f"new-{i}"})
                await kit_b.flush()
                b_path = kit_b.database.path
            a_path = kit_a.database.path
        assert a_path != b_path
        # A hit its own limit: MAX_STRINGS values kept, the other 10 counted as <other>
        a_values = context_values(a_path, "team")
        assert len(a_values) == MAX_STRINGS + 1 and OTHER in a_values
        # B stores its values as themselves
        assert context_values(b_path, "team") == {f'"new-{i}"' for i in range(5)}


class TestBucket:
    @pytest.mark.parametrize(("value", "key"), [
        (None, "null"), (True, "true"), (False, "false"),
        (0, "0"), (7, "7"), (-1000, "-1000"), (1000, "1000"),
        (1234, "1200"), (-5678, "-5700"), (123_456, "120000"), (10**20, str(10**20)),
        (7.0, "7"), (-3.0, "-3"), (3.14159, "3.1"), (0.000123, "0.00012"),
        (1500.0, "1500.0"), (2.5e10, "25000000000.0"),
        ("go", '"go"'), ("", '""'), ('a"b\\c', '"a\\"b\\\\c"'),
        ("x" * 64, '"' + "x" * 64 + '"'), ("x" * 65, OTHER),
    ])
    def test_values(self, value: object, key: str) -> None:
        assert Encoder().bucket("t", "a", value) == key

    @pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, [1], {"a": 1}, (1, 2),
                                       {1}, object(), b"bytes"])
    def test_left_out(self, value: object) -> None:
        assert Encoder().bucket("t", "a", value) is None

    def test_kept_keys_are_json(self) -> None:
        e = Encoder()
        for v, back in [(None, None), (True, True), (7, 7), (1234, 1200), (3.14159, 3.1),
                        ('a"b\\c', 'a"b\\c'), ("naïve", "naïve")]:
            assert json.loads(e.bucket("t", "a", v) or "") == back

    def test_bounded_strings_per_attribute(self) -> None:
        e = Encoder()
        n = MAX_STRINGS
        kept = [e.bucket("t", "team", f"v{i}") for i in range(n)]
        assert kept == [f'"v{i}"' for i in range(n)]
        assert e.bucket("t", "team", f"v{n}") == OTHER
        assert e.bucket("t", "team", "v999") == OTHER
        assert e.bucket("t", "team", "v3") == '"v3"'  # a monitored value stays itself
        # the limit is per (op_type, attribute)
        assert e.bucket("t", "owner", f"v{n}") == f'"v{n}"'
        assert e.bucket("u", "team", f"v{n}") == f'"v{n}"'
        # numbers are not limited
        assert e.bucket("t", "team", 999) == "999"

    def test_a_failing_value_takes_a_slot(self) -> None:
        """Among 1,000 values, one that fails again and again is monitored; noise is not."""
        rng = random.Random(3)
        hh = HeavyHitters()
        kept_bad = 0
        stream = [(f"r{i}", rng.random() < 0.1) for i in range(1000) for _ in range(20)]
        stream += [("bad", i % 4 != 0) for i in range(20)]
        rng.shuffle(stream)
        for v, failed in stream:
            kept = hh.kept(v)
            kept_bad += v == "bad" and kept
            hh.observe(v, failed)
        assert len(hh.scores) == MAX_STRINGS
        assert "bad" in hh.scores and kept_bad >= 12
        assert max(hh.scores, key=hh.scores.__getitem__) == "bad"

    def test_kept_is_decided_before_the_outcome(self) -> None:
        """A value's own failure never makes that same operation kept."""
        e = Encoder()
        for i in range(MAX_STRINGS):
            e.encode_context("t", {"team": f"v{i}"}, "success")
        _, _, items = e.encode_context("t", {"team": "new"}, "failure")
        assert items == (("team", OTHER),)

    def test_pairs_of_few_valued_attributes(self) -> None:
        e = Encoder()
        items = e.context_items("t", {"lang": "go", "complexity": 7, "flag": True})
        assert ("complexity\x1fflag", "[7,true]") in items
        assert ("complexity\x1flang", '[7,"go"]') in items
        assert ("flag\x1flang", '[true,"go"]') in items
        for i in range(60):  # complexity now has too many values to pair
            e.context_items("t", {"complexity": i, "lang": "go"})
        items = e.context_items("t", {"lang": "go", "complexity": 99})
        assert items == (("lang", '"go"'), ("complexity", "99"))

    def test_encoders_do_not_share(self) -> None:
        full = Encoder()
        for i in range(MAX_STRINGS + 10):
            full.bucket("t", "team", f"v{i}")
        assert full.bucket("t", "team", "fresh") == OTHER
        assert Encoder().bucket("t", "team", "fresh") == '"fresh"'


class TestContext:
    def test_context_items(self) -> None:
        e = Encoder()
        assert e.context_items("t", None) == ()
        assert e.context_items("t", {}) == ()
        items = e.context_items("t", {"complexity": 7, "lang": "go", "tags": ["a"],
                                      "ratio": math.nan, "ok": True, 3: None})
        assert singles(items) == (
            ("complexity", "7"), ("lang", '"go"'), ("ok", "true"), ("3", "null"))
        assert len(items) == 4 + 6  # and the six pairs of the four

    def test_encode_plain(self) -> None:
        e = Encoder()
        assert e.encode_context("t", None) == (None, False, ())
        assert e.encode_context("t", {}) == (None, False, ())
        text, coerced, items = e.encode_context("t", {"complexity": 7, "lang": "go"})
        assert json.loads(text or "") == {"complexity": 7, "lang": "go"}
        assert not coerced
        assert items == (("complexity", "7"), ("lang", '"go"'), ("complexity\x1flang", '[7,"go"]'))

    def test_equal_values_of_other_types_encode_apart(self) -> None:
        """1, 1.0 and True hash alike; the cache must not hand one the other's text."""
        e = Encoder()
        got = [e.encode_context("t", {"x": v})[0] for v in (1, 1.0, True, 1, True, 1.0)]
        assert got == ['{"x":1}', '{"x":1.0}', '{"x":true}', '{"x":1}', '{"x":true}', '{"x":1.0}']
        assert e.encode_context("t", {"x": True})[2] == (("x", "true"),)
        assert e.encode_context("t", {"x": 1})[2] == (("x", "1"),)

    def test_unhashable_values(self) -> None:
        e = Encoder()
        text, coerced, items = e.encode_context("t", {"tags": ["a", "b"], "n": 2})
        assert json.loads(text or "") == {"tags": ["a", "b"], "n": 2}
        assert not coerced
        assert items == (("n", "2"),)
        text, coerced, items = e.encode_context("t", {"s": {1}, "n": 2})
        assert json.loads(text or "") == {"s": "{1}", "n": 2}
        assert coerced

    def test_nan_and_objects_are_kept_as_repr(self) -> None:
        e = Encoder()
        text, coerced, items = e.encode_context("t", {"x": math.nan, "y": math.inf, "n": 1})
        assert json.loads(text or "") == {"x": "nan", "y": "inf", "n": 1}
        assert coerced
        assert items == (("n", "1"),)

        class Thing:
            def __repr__(self) -> str:
                return "<thing>"

        text, coerced, items = e.encode_context("t", {"o": Thing()})
        assert (text, coerced, items) == ('{"o":"<thing>"}', True, ())

    def test_long_strings_in_context(self) -> None:
        e = Encoder()
        long = "y" * 500
        text, _, items = e.encode_context("t", {"prompt": long})
        assert json.loads(text or "") == {"prompt": long}  # the row keeps it whole
        assert items == (("prompt", OTHER),)  # the rollup does not

    def test_cache_is_bounded(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(rollup, "_CACHE_LIMIT", 3)
        e = Encoder()
        for i in range(10):
            assert e.encode_context("t", {"i": i})[0] == f'{{"i":{i}}}'
        assert len(e._contexts) <= 3


class TestErrorSignature:
    def test_variables_are_masked(self) -> None:
        e = Encoder()
        assert e.error_signature(None) == ""
        assert e.error_signature("") == ""
        a = e.error_signature("Timeout after 30s on host-12")
        assert a == e.error_signature("Timeout after 5s on host-7")
        assert "<*>" in a and "Timeout" in a
        assert a != e.error_signature("disk full: /var/tmp/x1")

    def test_long_messages_and_bound(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(rollup, "_SIGNATURE_LIMIT", 5)
        e = Encoder()
        assert isinstance(e.error_signature("boom " * 5000), str)
        for i in range(20):
            e.error_signature(f"error number {i} in {'abc'[i % 3]}")
        assert len(e._signatures) <= 5


class TestAggregate:
    def test_counts(self) -> None:
        agg = Encoder().aggregate()
        h = 100
        t0 = h * HOUR
        items = (("lang", '"go"'),)
        agg.add("a", "success", t0 + 10, 1.0, items, None, None)
        agg.add("a", "success", t0 + 20, 2.0, items, None, None)
        agg.add("a", "success", t0 + 30, None, items, None, None, explored=True)
        agg.add("a", "failure", t0 + 40, 0.5, items, "ValueError", "bad value 17")
        agg.add("a", "failure", t0 + 50, 0.5, items, "ValueError", "bad value 99")
        agg.add("a", "failure", t0 + 45, 0.5, (), None, "no type")
        agg.add("a", "success", t0 + HOUR + 1, 4.0, (), None, None)  # the next hour
        assert agg.outcomes == {
            ("a", h, "success"): [3, 3.0],
            ("a", h, "failure"): [3, 1.5],
            ("a", h + 1, "success"): [1, 4.0],
        }
        assert agg.context == {
            (h, "a", "lang", '"go"', "success", 0): 2,
            (h, "a", "lang", '"go"', "success", 1): 1,
            (h, "a", "lang", '"go"', "failure", 0): 2,
        }
        sig = Encoder().error_signature("bad value 17")
        assert agg.errors[(h, "a", "ValueError", sig)] == [2, t0 + 40, t0 + 50, "bad value 99"]
        assert agg.errors[(h, "a", "Failure", "no type")] == [1, t0 + 45, t0 + 45, "no type"]
        assert agg.error_context == {(h, "a", "ValueError", sig, "lang", '"go"'): 2}

    def test_first_and_last_seen_in_any_order(self) -> None:
        agg = Encoder().aggregate()
        for t, msg in [(50.0, "m 2"), (10.0, "m 1"), (90.0, "m 3"), (30.0, "m 4")]:
            agg.add("a", "failure", t, None, (), "E", msg)
        [(n, first, last, example)] = agg.errors.values()
        assert (n, first, last, example) == (4, 10.0, 90.0, "m 3")

    def test_drop_context(self) -> None:
        agg = Encoder().aggregate()
        agg.add("a", "failure", 10.0, None, (("x", "1"),), "E", "m")
        agg.drop_context()
        assert agg.context == {} and agg.error_context == {}
        assert agg.outcomes == {("a", 0, "failure"): [1, 0.0]}
        assert len(agg.errors) == 1

    def test_signs_with_its_encoder(self) -> None:
        signed: list[str | None] = []

        def sign(m: str | None) -> str:
            signed.append(m)
            return "SIG"

        agg = Aggregate(sign)
        agg.add("a", "failure", 10.0, None, (), "E", "m1")
        agg.add("a", "failure", 11.0, None, (), "E", "m1")
        assert list(agg.errors) == [(0, "a", "E", "SIG")]
        assert signed == ["m1"]  # once per distinct message, not per operation


class TestWindowStats:
    def test_merge_adds(self) -> None:
        ws = WindowStats(0.0, 10 * HOUR)
        ws.outcomes[("a", 1, "success")] = 5
        ws.context[("a", "x", "1", "success", 0)] = 5
        ws.errors[("a", "E", "sig")] = [2, 100.0, 200.0, "old"]
        ws.error_context[("a", "E", "sig", "x", "1")] = 2
        agg = Aggregate(lambda m: "sig")
        agg.add("a", "success", HOUR + 1, 1.0, (("x", "1"),), None, None)
        agg.add("a", "failure", 50.0, 1.0, (("x", "1"),), "E", "early")
        agg.add("a", "failure", 300.0, 1.0, (("x", "1"),), "E", "late")
        ws.merge(agg)
        assert ws.outcomes == {("a", 1, "success"): 6, ("a", 0, "failure"): 2}
        assert ws.context == {("a", "x", "1", "success", 0): 6,
                              ("a", "x", "1", "failure", 0): 2}
        assert ws.errors == {("a", "E", "sig"): [4, 50.0, 300.0, "late"]}
        assert ws.error_context == {("a", "E", "sig", "x", "1"): 4}

    async def test_rollups_plus_edges_equal_rows(self, kit: learnkit.Kit) -> None:
        """window_stats over a window with partial hours equals aggregating its rows."""
        r = random.Random(5)
        base = 2000 * HOUR
        for _ in range(1500):
            t = base + r.uniform(0, 30 * HOUR)
            fail = r.random() < 0.3
            kit.record(r.choice(["a", "b"]), outcome="failure" if fail else "success",
                       started_at=t, ended_at=t + r.uniform(0, 5),
                       error_type=r.choice(["E1", "E2"]) if fail else None,
                       error_message=f"failed at step {r.randint(1, 9)}" if fail else None,
                       context={"complexity": r.randint(1, 6), "lang": r.choice(["go", "py"])})
        await kit.flush()
        start, end = base + 1234.5, base + 25 * HOUR + 17.25
        ws = await kit.database.store.window_stats(start, end)

        conn = sqlite3.connect(kit.database.path)
        rows = conn.execute(
            "SELECT op_type, outcome, ended_at, duration, context, error_type, error_message"
            " FROM operations WHERE ended_at >= ? AND ended_at < ?", [start, end]).fetchall()
        conn.close()
        enc = Encoder()
        agg = enc.aggregate()
        for t, o, ended, dur, ctx, et, msg in rows:
            agg.add(t, o, ended, dur, enc.context_items(t, json.loads(ctx)), et, msg)
        want = WindowStats(start, end)
        want.merge(agg)
        assert len(rows) > 1000
        assert ws.outcomes == want.outcomes
        assert ws.context == want.context
        assert ws.error_context == want.error_context
        assert ws.errors.keys() == want.errors.keys()
        for k, (n, first, last, example) in want.errors.items():
            got = ws.errors[k]
            assert got[0] == n
            assert got[1] == pytest.approx(first) and got[2] == pytest.approx(last)
            assert got[3] == example

        light = await kit.database.store.window_stats(start, end, context=False)
        assert light.outcomes == want.outcomes
        assert light.context == {} and light.error_context == {}

    async def test_daily_rollup_windows_equal_rows(self, kit: learnkit.Kit) -> None:
        """Windows over several days (whole days from the daily context rollup, hours at
        either end from the hourly one, partial hours from rows) equal their rows."""
        r = random.Random(9)
        base = 2000 * HOUR  # not on a day boundary
        for _ in range(3000):
            t = base + r.uniform(0, 6 * 24 * HOUR)
            kit.record(r.choice(["a", "b"]), outcome=r.choice(["success", "failure", "skipped"]),
                       started_at=t, context={"complexity": r.randint(1, 6),
                                              "lang": r.choice(["go", "py"])})
        await kit.flush()
        store = kit.database.store
        conn = sqlite3.connect(kit.database.path)
        assert conn.execute("SELECT sum(n) FROM context_rollup_daily").fetchone()[0] == \
            conn.execute("SELECT sum(n) FROM context_rollup_hourly").fetchone()[0] > 0
        windows = [(base + r.uniform(0, 40 * HOUR), base + r.uniform(90 * HOUR, 144 * HOUR))
                   for _ in range(6)] + [(base - 3 * HOUR, base + 150 * HOUR),
                                         (base + 22 * HOUR, base + 96 * HOUR)]
        for start, end in windows:
            rows = conn.execute(
                "SELECT op_type, outcome, ended_at, context FROM operations"
                " WHERE ended_at >= ? AND ended_at < ?", [start, end]).fetchall()
            enc = Encoder()
            agg = enc.aggregate()
            for t, o, ended, ctx in rows:
                agg.add(t, o, ended, 0.0, enc.context_items(t, json.loads(ctx)), None, None)
            want = WindowStats(start, end)
            want.merge(agg)
            ws = await store.window_stats(start, end)
            assert ws.context == want.context, (start, end)
            got = await store.context_counts(start, end, "complexity", "a")
            expect = {(v, o, x): n for (t, a, v, o, x), n in want.context.items()
                      if a == "complexity" and t == "a"}
            assert got == expect
        conn.close()



class _SpecEncoder:
    """The rollup items of a stream of contexts, written from the documented rules
    alone (one attribute at a time, no caches): what the encoder must give."""

    def __init__(self) -> None:
        self.hh: dict[tuple[str, str], HeavyHitters] = {}
        self.pair_seen: dict[tuple[str, str], set[str] | None] = {}

    def items(self, op_type: str, ctx: Mapping[Any, object], outcome: str
              ) -> tuple[tuple[str, str], ...]:
        out: list[tuple[str, str]] = []
        for key, v in ctx.items():
            k = str(key)
            if isinstance(v, str):
                if len(v) > 64:
                    b: str | None = OTHER
                else:
                    hh = self.hh.setdefault((op_type, k), HeavyHitters())
                    b = json.dumps(v, ensure_ascii=False) if hh.kept(v) else OTHER
            else:
                b = Encoder().bucket(op_type, k, v)  # numbers: a pure function
            if b is not None:
                out.append((k, b))
        pairable = []
        for k, b in out:
            if b == OTHER or PAIR_SEP in k:
                continue
            seen = self.pair_seen.setdefault((op_type, k), set())
            if seen is None:
                continue
            if b not in seen:
                if len(seen) >= rollup.PAIR_VALUES:
                    self.pair_seen[(op_type, k)] = None
                    continue
                seen.add(b)
            pairable.append((k, b))
        pairable = sorted(pairable)[:rollup.PAIR_ATTRS]
        out += [(f"{a1}{PAIR_SEP}{a2}", f"[{v1},{v2}]")
                for i, (a1, v1) in enumerate(pairable) for a2, v2 in pairable[i + 1:]]
        if outcome in ("success", "failure"):  # counted after the items were decided
            for key, v in ctx.items():
                k = str(key)
                if isinstance(v, str) and len(v) <= 64 and (op_type, k) in self.hh:
                    self.hh[(op_type, k)].observe(v, outcome == "failure")
        return tuple(out)

    @staticmethod
    def text(ctx: Mapping[Any, object]) -> str | None:
        """The row's JSON text, where JSON can hold the context as it is (no text
        for an empty one)."""
        if not ctx:
            return None
        try:
            return json.dumps(ctx, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError):
            return None


_values = st.one_of(
    st.sampled_from(["go", "py", "rust", "x" * 65, "naïve", 0.0, -0.0, 1, 1.0, True]),
    st.integers(0, 90).map(lambda i: f"repo-{i}"),  # more than MAX_STRINGS values
    st.integers(-2000, 2000), st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(), st.none(), st.just([1]),
)
_contexts = st.dictionaries(
    st.sampled_from(["complexity", "lang", "repo", "n", "ok", "1", "True", 1, True]),
    _values, max_size=5)


class TestEncoderAgainstSpec:
    @settings(max_examples=60, deadline=None)
    @given(st.lists(st.tuples(st.sampled_from(["a", "b"]), _contexts,
                              st.sampled_from(["success", "failure", "cancelled"])),
                    min_size=1, max_size=400),
           st.integers(1, 3))
    def test_items_follow_the_rules(
        self, stream: list[tuple[str, dict[str, object], str]], repeat: int
    ) -> None:
        """Caches (of whole contexts, numbers, strings' JSON and sketch cells) never
        change an item: every context, each repeated so caches are hit, gets the
        items the rules give one attribute at a time."""
        spec, enc = _SpecEncoder(), Encoder()
        for op_type, ctx, outcome in stream:
            for _ in range(repeat):
                want = spec.items(op_type, ctx, outcome)
                text, _, items = enc.encode_context(op_type, dict(ctx), outcome)
                assert items == want
                assert text == (spec.text(ctx) or text)

    def test_the_context_cache_rests_when_contexts_do_not_repeat(self) -> None:
        """Unique contexts switch the cache off for a while (no keys built, nothing
        kept); repeating ones switch it back on. Items are the same either way."""
        spec, enc = _SpecEncoder(), Encoder()
        for i in range(rollup._CACHE_PROBE + 1):
            ctx = {"tokens": 1000.5 + i, "lang": "go"}
            assert enc.encode_context("t", ctx, "success")[2] == spec.items("t", ctx, "success")
        assert enc._skip > 0 and not enc._contexts
        for _ in range(enc._skip + 2 * rollup._CACHE_PROBE):
            ctx = {"complexity": 7, "lang": "go"}
            assert enc.encode_context("t", ctx, "success")[2] == spec.items("t", ctx, "success")
        assert enc._skip == 0 and len(enc._contexts) == 1

    @pytest.mark.parametrize("unique_first", [0, rollup._CACHE_PROBE + 1])
    def test_keys_and_values_that_compare_equal_are_told_apart(self, unique_first: int) -> None:
        """{1: 5} and {True: 5}, 0.0 and -0.0: equal to Python, not to the rows or
        rollups; with the context cache in use and resting."""
        spec, enc = _SpecEncoder(), Encoder()
        for i in range(unique_first):
            enc.encode_context("t", {"tokens": 1000.5 + i}, "success")
            spec.items("t", {"tokens": 1000.5 + i}, "success")
        for ctx in ({1: 5}, {True: 5}, {"1": 5}, {1.0: 5}, {"x": 0.0}, {"x": -0.0},
                    {1: 5}, {True: 5}, {"x": 0.0}, {"x": -0.0}):
            text, _, items = enc.encode_context("t", dict(ctx), "success")  # type: ignore[arg-type]
            assert items == spec.items("t", ctx, "success")
            assert text == spec.text(ctx)

    def test_a_value_evicted_after_it_was_cached_is_other(self) -> None:
        """Contexts cached while a summary had room are not reused once it is full:
        a value that lost its slot is ``<other>`` the next time."""
        spec, enc = _SpecEncoder(), Encoder()
        # 25 failing values first (the 25th also ends pairing, which clears the
        # cache), then successes: r25 is cached after that, has the lowest score,
        # and is the one a failing newcomer replaces.
        stream = [({"repo": f"w{i}"}, "failure") for i in range(25)]
        stream += [({"repo": f"r{i}"}, "success") for i in range(25, MAX_STRINGS)]
        stream += [({"repo": "new"}, "failure")] * 3
        for ctx, outcome in stream:
            assert enc.encode_context("t", ctx, outcome)[2] == spec.items("t", ctx, outcome)
        assert "r25" not in spec.hh[("t", "repo")].scores
        assert enc.encode_context("t", {"repo": "r25"})[2] == (("repo", OTHER),)
