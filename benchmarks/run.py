"""learnkit's benchmark table (issue 14), side by side with its references, in one run.

    python benchmarks/run.py                 # the table at the default sizes (trend on 1M)
    python benchmarks/run.py --big           # also the weekly trend over 10M stored operations
    python benchmarks/run.py --quick         # a smoke run with tiny sizes (seconds)
    python benchmarks/run.py --only writer --profile   # one section, with a cProfile of the writer

For every thread of the writer (the commit thread too, and who holds the GIL):
``py-spy record --gil --threads -- python benchmarks/run.py --only writer``.

The references come from the optional ``bench`` extra
(``pip install -e '.[bench]'``); without opentelemetry-sdk the OpenTelemetry
column says so and the rest still runs.

Every figure includes the writer's work and ends with all records durable:
the clock stops when ``await kit.flush()`` returns (or the ``learnkit``
command exits, for import). Each figure is the median of ``--rounds`` rounds;
a ratio is the median of the per-round ratios, each taken within one round on
the same machine. Only learnkit's public API is used (``learnkit.open``,
``@tracked``, ``track``, ``kit.record``, ``kit.flush``, ``kit.analytics``,
``InsightsGenerator``, the ``learnkit`` command), plus raw ``sqlite3`` for the
reference rows and to read sizes.

How the stored-operations databases are built: one week of realistic
operations goes through ``kit.record`` and the real writer; then SQL copies
that week's rows *and* rollup rows forward 51 times, shifted by whole weeks
(rollups are keyed by hour, so a shifted copy is exactly what the writer
would have stored for shifted operations). The run checks this: rollup
totals against the rows, weekly rates against counts of rows, and (when the
import section runs) every rollup row against a database that the real
writer produced from the same operations through ``learnkit import``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import random
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import learnkit

HOUR = 3600
DAY = 86400.0
WEEK = 7 * DAY
WEEKS = 52
#: The base week of the built databases starts here (hour-aligned).
T0 = 1_760_000_400.0
#: "Now" for the analyses: just after the 52nd week, not on an hour, so that
#: every weekly window has partial hours at both edges (read from rows).
NOW = T0 + WEEKS * WEEK + 1234.5

OP_TYPES = ("process_issue", "run_tests", "open_pr")
LANGS = ("python", "go", "rust", "typescript", "java", "kotlin")
REPOS = tuple(f"org{i % 17}/service-{i:03d}" for i in range(200))
ERRORS: tuple[tuple[str, Callable[[random.Random], str]], ...] = (
    ("TestFailure", lambda r: f"{r.randint(1, 40)} tests failed in tests/test_"
                              f"{r.choice('abcdefgh')}{r.randint(1, 99)}.py::test_case_"
                              f"{r.randint(1, 500)}"),
    ("TimeoutError", lambda r: f"operation timed out after {r.randint(30, 600)}s waiting for "
                               f"runner-{r.randint(1, 64)}.ci.internal:{r.randint(2000, 9000)}"),
    ("MergeConflict", lambda r: f"conflict in src/{r.choice(['core', 'api', 'ui'])}/"
                                f"module_{r.randint(1, 300)}.py at line {r.randint(1, 2000)}"),
    ("RateLimited", lambda r: f"GitHub API rate limit exceeded, retry after "
                              f"{r.randint(1, 3600)} seconds (request id {r.getrandbits(64):x})"),
    ("lint.LintError", lambda r: f"E{r.randint(100, 999)} line too long ("
                                 f"{r.randint(101, 200)} > 100 characters) in file "
                                 f"'{r.choice('xyz')}{r.randint(1, 50)}.py'"),
)

CONFIG = """\
[learning]
enabled = false
[storage]
path = "{db}"
max_queue = {max_queue}
[thresholds.max_complexity]
value = 12
attribute = "complexity"
op_type = "process_issue"
min = 3
max = 12
"""

_perf = time.perf_counter
_started = _perf()
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def log(msg: str) -> None:
    """Progress, on stderr (stdout holds the results)."""
    print(f"[{_perf() - _started:7.1f}s] {msg}", file=sys.stderr, flush=True)


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def spread(xs: list[float], fmt: str) -> str:
    """The rounds of a figure, for the details."""
    return ", ".join(format(x, fmt) for x in xs)


def write_config(workdir: Path, db: str = "bench.db", max_queue: int | None = None) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = workdir / "learnkit.toml"
    mq = max(max_queue or 0, learnkit.StorageConfig().max_queue)
    cfg.write_text(CONFIG.format(db=db, max_queue=mq))
    return cfg


def remove_db(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(str(path) + suffix).unlink(missing_ok=True)


# -- the machine ------------------------------------------------------------------------


def machine() -> dict[str, str]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        rev = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True,
                             text=True, cwd=Path(__file__).parent, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        rev = ""
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "sqlite": sqlite3.sqlite_version,
        "os": platform.platform(terse=True),
        "learnkit": learnkit.__version__ + (f" ({rev})" if rev else ""),
    }


def speed_check() -> float:
    """µs for a fixed bit of pure Python (median of 9): compare the start and the end of a
    run, or two runs, to see whether the machine was as fast throughout."""
    times = []
    for _ in range(9):
        t = _perf()
        for _ in range(2000):
            sum(range(100))
        times.append((_perf() - t) / 2000 * 1e6)
    return median(times)


def load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


# -- workloads ---------------------------------------------------------------------------


def realistic_records(n: int, start: float, end: float, seed: int) -> list[dict[str, Any]]:
    """``kit.record`` arguments: three op types, four context attributes (complexity
    1-12, lang of 6, repo of 200, tokens a float), ~19% failures whose messages carry
    ids, paths and numbers; ended in time order over ``[start, end)``."""
    r = random.Random(seed)
    out = []
    for t in sorted(r.uniform(start, end) for _ in range(n)):
        cx = r.randint(1, 12)
        lang = r.choice(LANGS)
        dur = r.lognormvariate(3.0, 1.0)
        rec: dict[str, Any] = {
            "op_type": r.choice(OP_TYPES), "key": f"issue-{r.randint(1, 99_999)}",
            "started_at": t - dur, "ended_at": t,
            "context": {"complexity": cx, "lang": lang, "repo": r.choice(REPOS),
                        "tokens": round(r.lognormvariate(8.0, 1.0), 1)},
        }
        if r.random() < 0.12 + 0.03 * max(0, cx - 6) + (0.1 if lang == "go" else 0.0):
            error_type, message = r.choice(ERRORS)
            rec.update(outcome="failure", error_type=error_type, error_message=message(r))
        else:
            rec["outcome"] = "success"
        out.append(rec)
    return out


def simple_records(n: int, start: float) -> list[dict[str, Any]]:
    """No context, success only."""
    return [{"op_type": "simple", "key": f"item-{i}", "outcome": "success",
             "started_at": start + i * 0.01, "ended_at": start + i * 0.01 + 0.005}
            for i in range(n)]


# -- 1. the tracking path ----------------------------------------------------------------


async def _bare_async() -> int:
    return 1


async def _bare_raise() -> None:
    raise ValueError("boom 42")


def _bare_sync() -> int:
    return 1


async def _block_track() -> int:
    async with learnkit.track("bench_block"):
        return 1


_tracked_async = learnkit.tracked("bench_async")(_bare_async)
_tracked_raise = learnkit.tracked("bench_raise")(_bare_raise)
_tracked_sync = learnkit.tracked("bench_sync")(_bare_sync)

#: name, measure, bare function, learnkit's version, mode, goal (ratio at most)
CASES: tuple[tuple[str, str, Callable[..., Any], Callable[..., Any], str, float], ...] = (
    ("async", "`@tracked` async, success, µs added per call, writer's work included",
     _bare_async, _tracked_async, "async", 0.1),
    ("raise", "same, raising", _bare_raise, _tracked_raise, "raise", 0.05),
    ("block", "`async with track()` success, µs added", _bare_async, _block_track, "async", 0.1),
    ("sync", "sync `@tracked` success, µs added", _bare_sync, _tracked_sync, "sync", 0.1),
)


async def call_loop(fn: Callable[..., Any], n: int, mode: str) -> None:
    """Call ``fn`` n times, yielding to the loop every 100 calls as real work does
    (a loop that never yields starves the writer, and any background task)."""
    sleep = asyncio.sleep
    if mode == "async":
        for i in range(n):
            await fn()
            if i % 100 == 0:
                await sleep(0)
    elif mode == "raise":
        for i in range(n):
            try:
                await fn()
            except ValueError:
                pass
            if i % 100 == 0:
                await sleep(0)
    else:
        for i in range(n):
            fn()
            if i % 100 == 0:
                await sleep(0)


def otel_available() -> str | None:
    """None when opentelemetry-sdk imports, else why not."""
    try:
        import opentelemetry.sdk.trace
        import opentelemetry.sdk.trace.export  # noqa: F401
    except ImportError as exc:
        return f"opentelemetry-sdk is not installed ({exc.name}); pip install -e '.[bench]'"
    return None


def otel_provider(max_queue: int) -> tuple[Any, Any, Any]:
    """A TracerProvider with a BatchSpanProcessor and a no-op exporter (counting only).

    The span queue holds as many spans as learnkit's queue holds records, so
    that neither side drops anything: both end with every record exported.
    """
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    class NoOpExporter(SpanExporter):
        def __init__(self) -> None:
            self.exported = 0

        def export(self, spans: Any) -> SpanExportResult:
            self.exported += len(spans)
            return SpanExportResult.SUCCESS

        def shutdown(self) -> None:
            pass

    provider = TracerProvider()
    exporter = NoOpExporter()
    provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=max_queue))
    return provider, exporter, provider.get_tracer("learnkit-bench")


def otel_version(fn: Callable[..., Any], mode: str, tracer: Any, name: str) -> Callable[..., Any]:
    """``fn`` inside ``tracer.start_as_current_span`` (which records a raised exception)."""
    span = tracer.start_as_current_span
    if mode == "sync":

        def sync_wrapper() -> Any:
            with span(name):
                return fn()

        return sync_wrapper

    async def async_wrapper() -> Any:
        with span(name):
            return await fn()

    return async_wrapper


async def time_learnkit(workdir: Path, fn: Callable[..., Any], n: int, mode: str) -> float:
    """Seconds for n calls plus the flush that makes them all durable."""
    cfg = write_config(workdir)
    remove_db(workdir / "bench.db")
    async with learnkit.open(cfg) as kit:
        t = _perf()
        await call_loop(fn, n, mode)
        durable = await kit.flush()
        elapsed = _perf() - t
        stats = kit.stats
    remove_db(workdir / "bench.db")
    if not durable or stats.dropped or stats.enqueued != n or stats.written < n:
        raise RuntimeError(f"learnkit did not keep every record: {stats}")
    return elapsed


async def time_otel(fn: Callable[..., Any], n: int, mode: str) -> tuple[float, int]:
    """Seconds for n spanned calls plus ``force_flush`` (every span exported)."""
    provider, exporter, tracer = otel_provider(learnkit.StorageConfig().max_queue)
    wrapped = otel_version(fn, mode, tracer, "bench")
    t = _perf()
    await call_loop(wrapped, n, mode)
    provider.force_flush()
    elapsed = _perf() - t
    provider.shutdown()
    return elapsed, n - exporter.exported


async def tracking_section(workdir: Path, n: int, rounds: int, otel_missing: str | None
                           ) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, _measure, bare, mine, mode, _goal in CASES:
        lk_us: list[float] = []
        ot_us: list[float] = []
        ratios: list[float] = []
        dropped = 0
        for k in range(rounds):
            gc.collect()
            t = _perf()
            await call_loop(bare, n, mode)
            bare_s = _perf() - t
            lk = (await time_learnkit(workdir, mine, n, mode) - bare_s) / n * 1e6
            lk_us.append(lk)
            if otel_missing is None:
                gc.collect()
                ot_s, lost = await time_otel(bare, n, mode)
                dropped += lost
                ot = (ot_s - bare_s) / n * 1e6
                ot_us.append(ot)
                ratios.append(lk / ot)
            log(f"tracking {name} round {k + 1}/{rounds}: learnkit +{lk:.2f} us"
                + (f", OpenTelemetry +{ot_us[-1]:.2f} us" if ot_us else ""))
        out[name] = {"learnkit": lk_us, "otel": ot_us, "ratio": ratios, "otel_dropped": dropped}
    return out


# -- 2. the writer -----------------------------------------------------------------------


async def writer_round(workdir: Path, records: list[dict[str, Any]]) -> tuple[float, float]:
    """(seconds handing the records to ``kit.record``, seconds until ``flush`` returns).

    Everything is handed over first without yielding (the queue is sized to
    hold it, so nothing waits or drops); then the flush is the writer's work
    alone, batches pipelined as in normal running.
    """
    cfg = write_config(workdir, max_queue=len(records))
    remove_db(workdir / "bench.db")
    async with learnkit.open(cfg) as kit:
        record = kit.record
        gc.collect()
        t = _perf()
        for kw in records:
            record(**kw)
        t1 = _perf()
        durable = await kit.flush()
        t2 = _perf()
        stats = kit.stats
    remove_db(workdir / "bench.db")
    if not durable or stats.dropped or stats.written != len(records):
        raise RuntimeError(f"learnkit did not keep every record: {stats}")
    return t1 - t, t2 - t1


async def make_schema(db: Path) -> None:
    """learnkit's own schema in ``db``, made by opening a kit there (public API)."""
    cfg = write_config(db.parent, db=db.name)
    async with learnkit.open(cfg):
        pass


def operation_columns(conn: sqlite3.Connection) -> list[str]:
    return [r[1] for r in conn.execute("PRAGMA table_info(operations)")]


def raw_rows(records: list[dict[str, Any]], columns: list[str]) -> list[tuple[Any, ...]]:
    """The rows learnkit stores for these records, as tuples for ``executemany``."""
    rows = []
    for i, rec in enumerate(records, 1):
        ctx = rec.get("context")
        values = {
            "id": i, "op_type": rec["op_type"], "key": rec.get("key"),
            "outcome": rec["outcome"], "started_at": rec["started_at"],
            "ended_at": rec["ended_at"], "duration": rec["ended_at"] - rec["started_at"],
            "error_type": rec.get("error_type"), "error_message": rec.get("error_message"),
            "context": _dumps(ctx) if ctx else None, "session_id": 1,
        }
        rows.append(tuple(values.get(c) for c in columns))
    return rows


def raw_round(db: Path, rows: list[tuple[Any, ...]], columns: list[str], batch: int) -> float:
    """Seconds for raw ``executemany`` of prepared rows into learnkit's schema: WAL,
    synchronous=NORMAL as learnkit uses, one transaction per ``batch`` rows."""
    remove_db(db)
    asyncio.run(make_schema(db))
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    sql = (f"INSERT INTO operations ({', '.join(columns)})"
           f" VALUES ({', '.join('?' * len(columns))})")
    gc.collect()
    t = _perf()
    for k in range(0, len(rows), batch):
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(sql, rows[k:k + batch])
        conn.execute("COMMIT")
    elapsed = _perf() - t
    stored = conn.execute("SELECT count(*) FROM operations").fetchone()[0]
    conn.close()
    remove_db(db)
    if stored != len(rows):
        raise RuntimeError(f"raw reference stored {stored} of {len(rows)} rows")
    return elapsed


def writer_section(workdir: Path, n: int, rounds: int) -> dict[str, dict[str, Any]]:
    batch = learnkit.StorageConfig().batch_size
    out: dict[str, dict[str, Any]] = {}
    for name, records in (("realistic", realistic_records(n, T0, T0 + WEEK, seed=1)),
                          ("simple", simple_records(n, T0))):
        raw_db = workdir / "raw.db"
        asyncio.run(make_schema(raw_db))
        with sqlite3.connect(raw_db) as conn:
            columns = operation_columns(conn)
        conn.close()
        rows = raw_rows(records, columns)
        # The inputs are the benchmark's, not the library's: keep the garbage
        # collector from scanning them again and again (both sides gain).
        gc.collect()
        gc.freeze()
        lk, lk_flush, raw, ratios = [], [], [], []
        for k in range(rounds):
            enqueue_s, flush_s = asyncio.run(writer_round(workdir, records))
            raw_s = raw_round(raw_db, rows, columns, batch)
            lk.append(n / (enqueue_s + flush_s))
            lk_flush.append(n / flush_s)
            raw.append(n / raw_s)
            ratios.append(lk[-1] / raw[-1])
            log(f"writer {name} round {k + 1}/{rounds}: learnkit {lk[-1]:,.0f} rows/s "
                f"(flush alone {lk_flush[-1]:,.0f}), raw executemany {raw[-1]:,.0f} rows/s")
        out[name] = {"learnkit": lk, "flush": lk_flush, "raw": raw, "ratio": ratios,
                     "failures": sum(r["outcome"] == "failure" for r in records) / n}
        gc.unfreeze()
        del records, rows
        gc.collect()
    return out


def profile_writer(workdir: Path, n: int) -> None:
    """cProfile of one realistic writer round (the loop thread: record + prepare)."""
    import cProfile
    import pstats

    records = realistic_records(n, T0, T0 + WEEK, seed=1)
    prof = cProfile.Profile()
    prof.enable()
    enqueue_s, flush_s = asyncio.run(writer_round(workdir, records))
    prof.disable()
    print(f"\n## cProfile: writer, {n:,} realistic rows (the event-loop thread; "
          f"record {enqueue_s:.2f} s + flush {flush_s:.2f} s under the profiler)\n")
    stats = pstats.Stats(prof, stream=sys.stdout)
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats("learnkit", 25)


# -- the stored-operations databases ---------------------------------------------------------


def rollup_tables(conn: sqlite3.Connection, *, readable: bool = False) -> list[str]:
    """The rollup tables as stored (context counts keyed by integer ids), or with
    ``readable`` as read by name: the keyed tables replaced by their views, whose
    rows compare across databases (ids do not)."""
    if not readable:
        return [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE '%rollup%'"
            " ORDER BY name")]
    return [r[0] for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') AND name LIKE '%rollup%'"
        " ORDER BY name") if "key" not in columns_of(conn, r[0])]


def columns_of(conn: sqlite3.Connection, table: str) -> list[str]:
    return [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]


async def build_base_week(cfg: Path, per_week: int, seed: int) -> None:
    async with learnkit.open(cfg, clock=lambda: T0 + WEEK) as kit:
        chunk = 50_000
        for i in range(0, per_week, chunk):
            m = min(chunk, per_week - i)
            # Each chunk covers its own slice of the week, in time order.
            a = T0 + WEEK * i / per_week
            b = T0 + WEEK * (i + m) / per_week
            for kw in realistic_records(m, a, b, seed=seed + i):
                kit.record(**kw)
            if not await kit.flush():
                raise RuntimeError(f"could not write the base week: {kit.stats}")
        if kit.stats.dropped:
            raise RuntimeError(f"records dropped while building: {kit.stats}")


def replicate_weeks(db: Path) -> None:
    """Copy the base week's rows and rollup rows to weeks 1..51, shifted by whole weeks."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("PRAGMA cache_size = -262144")
    span = conn.execute("SELECT max(id) FROM operations").fetchone()[0]
    base_hours = int((T0 + WEEK) // HOUR)
    op_cols = operation_columns(conn)
    shift_ops = {"id": "id + :k * :span", "parent_id": "parent_id + :k * :span",
                 "started_at": "started_at + :k * :week", "ended_at": "ended_at + :k * :week"}
    op_sql = (f"INSERT INTO operations ({', '.join(op_cols)}) SELECT "
              + ", ".join(shift_ops.get(c, c) for c in op_cols)
              + " FROM operations WHERE id <= :span")
    shift_rollup = {"hour": "hour + :k * 168", "first_seen": "first_seen + :k * :week",
                    "last_seen": "last_seen + :k * :week"}
    rollup_sql = []
    for table in rollup_tables(conn):
        cols = columns_of(conn, table)
        if table == "context_rollup_daily":
            continue  # days do not align with the base week: rebuilt from the hours below
        if "hour" not in cols:
            raise RuntimeError(f"rollup table {table} has no hour column: cannot shift it")
        rollup_sql.append(f"INSERT INTO {table} ({', '.join(cols)}) SELECT "
                          + ", ".join(shift_rollup.get(c, c) for c in cols)
                          + f" FROM {table} WHERE hour < :base_hours")
    args = {"span": span, "week": WEEK, "base_hours": base_hours}
    for k in range(1, WEEKS):
        conn.execute("BEGIN")
        conn.execute(op_sql, {**args, "k": k})
        for sql in rollup_sql:
            conn.execute(sql, {**args, "k": k})
        conn.execute("COMMIT")
    if "context_rollup_daily" in rollup_tables(conn):
        # What the writer keeps: each UTC day's sum of the hourly context rows.
        conn.execute("BEGIN")
        conn.execute("DELETE FROM context_rollup_daily")
        conn.execute("INSERT INTO context_rollup_daily (day, key, outcome, explore, n)"
                     " SELECT hour / 24, key, outcome, explore, sum(n)"
                     " FROM context_rollup_hourly GROUP BY 1, 2, 3, 4")
        conn.execute("COMMIT")
    conn.execute("UPDATE meta SET value = (SELECT max(id) + 1 FROM operations)"
                 " WHERE key = 'next_id'")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def build_main(workdir: Path, ops: int) -> None:
    """(In a fresh process.) A database of ``ops`` realistic operations over 52 weeks."""
    cfg = write_config(workdir)
    remove_db(workdir / "bench.db")
    per_week = max(1, ops // WEEKS)
    t = _perf()
    asyncio.run(build_base_week(cfg, per_week, seed=1000))
    t1 = _perf()
    replicate_weeks(workdir / "bench.db")
    print(json.dumps({"per_week": per_week, "base_s": t1 - t, "copy_s": _perf() - t1}))


def build_db(workdir: Path, ops: int) -> dict[str, Any]:
    """Build in a subprocess, so this process's caches and memory stay as they were."""
    log(f"building a database of {ops:,} operations over {WEEKS} weeks in {workdir}")
    proc = subprocess.run([sys.executable, __file__, "--build-db", str(workdir),
                           "--build-ops", str(ops)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"building the database failed:\n{proc.stderr}")
    info: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    with sqlite3.connect(workdir / "bench.db") as conn:
        info["ops"] = conn.execute("SELECT count(*) FROM operations").fetchone()[0]
    conn.close()
    log(f"built {info['ops']:,} operations: base week {info['base_s']:.1f} s through "
        f"kit.record, 51 shifted copies {info['copy_s']:.1f} s")
    return info


def row_counts(db: Path, start: float, end: float) -> dict[str, int]:
    """Outcomes of operations that ended in [start, end), counted from the rows."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT outcome, count(*) FROM operations WHERE ended_at >= ?"
                            " AND ended_at < ? GROUP BY 1", (start, end)).fetchall()
    conn.close()
    return dict(rows)


def rollup_vs_rows(db: Path) -> list[str]:
    """Problems found comparing the rollups' totals with the rows."""
    problems = []
    with sqlite3.connect(db) as conn:
        ops = conn.execute("SELECT count(*) FROM operations WHERE ended_at IS NOT NULL"
                           ).fetchone()[0]
        hourly = conn.execute("SELECT coalesce(sum(n), 0) FROM rollup_hourly").fetchone()[0]
        fails = conn.execute("SELECT count(*) FROM operations WHERE outcome = 'failure'"
                             ).fetchone()[0]
        errors = conn.execute("SELECT coalesce(sum(n), 0) FROM error_rollup").fetchone()[0]
        lang = conn.execute("SELECT coalesce(sum(n), 0) FROM context_rollup WHERE attr = 'lang'"
                            ).fetchone()[0]
    conn.close()
    if hourly != ops:
        problems.append(f"rollup_hourly counts {hourly:,} operations, the rows {ops:,}")
    if errors != fails:
        problems.append(f"error_rollup counts {errors:,} failures, the rows {fails:,}")
    if lang != ops:
        problems.append(f"context_rollup counts {lang:,} lang values for {ops:,} operations")
    with sqlite3.connect(db) as conn:
        tables = rollup_tables(conn)
        if "context_rollup_daily" in tables:
            day = conn.execute("SELECT coalesce(sum(n), 0) FROM context_rollup_daily"
                               ).fetchone()[0]
            hour = conn.execute("SELECT coalesce(sum(n), 0) FROM context_rollup_hourly"
                                ).fetchone()[0]
            if day != hour:
                problems.append(f"context_rollup_daily counts {day:,}, the hourly {hour:,}")
    conn.close()
    return problems


# -- 3. the weekly trend ------------------------------------------------------------------


async def trend_rounds(workdir: Path, rounds: int) -> dict[str, Any]:
    cfg = workdir / "learnkit.toml"
    db = workdir / "bench.db"
    async with learnkit.open(cfg, clock=lambda: NOW) as kit:
        a = kit.analytics
        t = _perf()
        trend = await a.get_weekly_trend(WEEKS)
        first = _perf() - t
        times, loop_times = [], []
        for k in range(rounds):
            t = _perf()
            trend = await a.get_weekly_trend(WEEKS)
            times.append(_perf() - t)
            t = _perf()
            for w in range(WEEKS):
                await a.get_success_rate(days=7, offset=7 * w)
            loop_times.append(_perf() - t)
            log(f"trend round {k + 1}/{rounds}: get_weekly_trend({WEEKS}) "
                f"{times[-1] * 1e3:.1f} ms")
    problems = rollup_vs_rows(db)
    for i in (0, WEEKS // 2, WEEKS - 1):
        r = trend[i]
        counts = row_counts(db, r.start, r.end)
        if (r.successes, r.failures) != (counts.get("success", 0), counts.get("failure", 0)):
            problems.append(f"week {i + 1}: API says {r.successes}/{r.failures} "
                            f"successes/failures, the rows {counts}")
    total = sum(r.n for r in trend)
    rows = row_counts(db, trend[0].start, trend[-1].end)
    if total != rows.get("success", 0) + rows.get("failure", 0):
        problems.append(f"the 52 weeks hold {total:,} operations by the API, {rows} by the rows")
    return {"times": times, "first": first, "loop": loop_times, "weeks_n": total,
            "problems": problems}


# -- 4. the summary -------------------------------------------------------------------------


async def summary_rounds(workdir: Path, rounds: int) -> dict[str, Any]:
    cfg = workdir / "learnkit.toml"
    async with learnkit.open(cfg, clock=lambda: NOW) as kit:
        t = _perf()
        s = await kit.insights.generate_summary(days=365)
        first = _perf() - t
        times = []
        for k in range(rounds):
            gen = learnkit.InsightsGenerator(kit.analytics, None)  # no cached summary
            t = _perf()
            s = await gen.generate_summary(days=365)
            times.append(_perf() - t)
            log(f"summary round {k + 1}/{rounds}: generate_summary(days=365) {times[-1]:.2f} s")
    counts = row_counts(workdir / "bench.db", NOW - 365 * DAY, NOW)
    expected = counts.get("success", 0) + counts.get("failure", 0)
    problems = [] if s["sample_size"] == expected else [
        f"summary sample_size {s['sample_size']:,}, the rows {expected:,}"]
    return {"times": times, "first": first, "sample_size": s["sample_size"],
            "tests": s["tests"], "clusters": len(s["error_clusters"]),
            "patterns": len(s["failure_patterns"]),
            "recommendations": len(s["recommendations"]), "problems": problems}


# -- 5. import -------------------------------------------------------------------------------


def cli(args: list[str], cwd: Path) -> tuple[float, str]:
    """Run the ``learnkit`` command; (seconds until it exited, stdout)."""
    t = _perf()
    proc = subprocess.run([sys.executable, "-m", "learnkit", *args], cwd=cwd,
                          capture_output=True, text=True)
    elapsed = _perf() - t
    if proc.returncode != 0:
        raise RuntimeError(f"learnkit {' '.join(args)} failed:\n{proc.stderr}")
    return elapsed, proc.stdout


def json_round(path: Path) -> float:
    loads = json.loads
    gc.collect()
    t = _perf()
    with path.open(encoding="utf-8") as f:
        for line in f:
            loads(line)
    return _perf() - t


# Context rollups keep high-cardinality strings through a per-store heavy-hitter
# summary whose choices depend on the order operations arrive in, so a database
# built in one order and one imported in another legitimately differ there.
ORDER_DEPENDENT = ("context_rollup", "error_context_rollup")


def compare_rollups(db_a: Path, db_b: Path) -> list[str]:
    """Rollup rows in one database and not the other (counts and keys; not the
    float columns, which an export to ISO 8601 rounds to microseconds)."""
    problems = []
    conn = sqlite3.connect(db_a)
    conn.execute("ATTACH DATABASE ? AS b", (str(db_b),))
    for table in rollup_tables(conn, readable=True):
        cols = [c for c in columns_of(conn, table)
                if c not in ("duration_sum", "first_seen", "last_seen", "example")]
        sel = ", ".join(cols)
        only_a = conn.execute(f"SELECT count(*) FROM (SELECT {sel} FROM main.{table}"
                              f" EXCEPT SELECT {sel} FROM b.{table})").fetchone()[0]
        only_b = conn.execute(f"SELECT count(*) FROM (SELECT {sel} FROM b.{table}"
                              f" EXCEPT SELECT {sel} FROM main.{table})").fetchone()[0]
        if (only_a or only_b) and table not in ORDER_DEPENDENT:
            problems.append(f"{table}: {only_a:,} rows only in the built database, "
                            f"{only_b:,} only in the imported one")
    conn.close()
    return problems


def import_section(workdir: Path, rounds: int) -> dict[str, Any]:
    lines = workdir / "export.jsonl"
    _, out = cli(["--config", str(workdir / "learnkit.toml"), "export", "--format", "jsonl",
                  "--output", str(lines)], workdir)
    n = sum(1 for _ in lines.open(encoding="utf-8"))
    log(f"exported {n:,} operations as JSON lines ({lines.stat().st_size / 2**20:,.0f} MiB)")
    idir = workdir / "import"
    cfg = write_config(idir)
    lk, ref, ratios = [], [], []
    for k in range(rounds):
        remove_db(idir / "bench.db")
        elapsed, out = cli(["--config", str(cfg), "import", str(lines)], idir)
        if f"imported {n:,} operation(s)" not in out:
            raise RuntimeError(f"learnkit import said: {out}")
        parse_s = json_round(lines)
        lk.append(n / elapsed)
        ref.append(n / parse_s)
        ratios.append(lk[-1] / ref[-1])
        log(f"import round {k + 1}/{rounds}: learnkit import {lk[-1]:,.0f} lines/s "
            f"({elapsed:.1f} s), json.loads alone {ref[-1]:,.0f} lines/s")
    problems = compare_rollups(workdir / "bench.db", idir / "bench.db")
    lines.unlink()
    return {"lines": n, "learnkit": lk, "json": ref, "ratio": ratios, "problems": problems,
            "db": idir / "bench.db"}


# -- 6. size -----------------------------------------------------------------------------------


def db_size(db: Path) -> dict[str, Any]:
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    ops = conn.execute("SELECT count(*) FROM operations").fetchone()[0]
    rollups = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
               for t in rollup_tables(conn)}
    try:
        objects = dict(conn.execute(
            "SELECT name, sum(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC").fetchall())
    except sqlite3.Error:  # SQLite built without the dbstat table
        objects = {}
    conn.close()
    size = sum(Path(str(db) + s).stat().st_size for s in ("", "-wal")
               if Path(str(db) + s).exists())
    return {"ops": ops, "bytes": size, "mib_per_m": size / 2**20 / (ops / 1e6),
            "rollups": rollups, "objects": objects}


# -- the table -----------------------------------------------------------------------------------


def fmt_count(n: float) -> str:
    if n >= 10_000_000:
        return f"{n / 1e6:.0f}M"
    if n >= 1_000_000:
        return f"{n / 1e6:.1f}M"
    return f"{n:,.0f}"


def ops_label(n: int) -> str:
    """1M for 999,960 (the builder stores a whole number of operations per week)."""
    return f"{round(n / 1e6, 2):g}M" if n >= 500_000 else f"{n:,}"


def fmt_ratio(r: float) -> str:
    return f"{r:.2f}x" if r >= 0.1 else f"{r:.3f}x"


def table(rows: list[tuple[str, str, str, str, str]]) -> str:
    header = ("measure", "learnkit", "reference", "ratio", "goal")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(5)]

    def line(cells: tuple[str, ...]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|",
                      *(line(r) for r in rows)])


SECTIONS = ("tracking", "writer", "trend", "summary", "import", "size")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, help="rounds per figure (default 5; --quick: 2)")
    ap.add_argument("--quick", action="store_true", help="a smoke run with tiny sizes")
    ap.add_argument("--big", action="store_true",
                    help="also the weekly trend (and size) over 10M stored operations")
    ap.add_argument("--calls", type=int, help="calls per tracking figure (default 100,000)")
    ap.add_argument("--rows", type=int, help="rows per writer figure (default 200,000)")
    ap.add_argument("--ops", type=int,
                    help="stored operations for trend, summary, import, size (default 1M)")
    ap.add_argument("--big-ops", type=int, default=10_000_000, help=argparse.SUPPRESS)
    ap.add_argument("--only", action="append", choices=SECTIONS,
                    help="run only this section (repeatable)")
    ap.add_argument("--profile", action="store_true",
                    help="also print a cProfile of the writer on realistic rows")
    ap.add_argument("--workdir", type=Path, help="where the databases go (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the workdir")
    ap.add_argument("--build-db", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--build-ops", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    quick = args.quick
    args.rounds = args.rounds or (2 if quick else 5)
    args.calls = args.calls or (2_000 if quick else 100_000)
    args.rows = args.rows or (5_000 if quick else 200_000)
    args.ops = args.ops or (20_000 if quick else 1_000_000)
    if quick:
        args.big_ops = min(args.big_ops, 60_000)
    if min(args.rounds, args.calls, args.rows, args.ops) < 1:
        ap.error("--rounds, --calls, --rows and --ops must be positive")
    args.sections = set(args.only or SECTIONS)
    return args


def run(args: argparse.Namespace) -> int:
    m = machine()
    load_at_start = load()
    speed_at_start = speed_check()
    rounds = args.rounds
    otel_missing = otel_available()
    print("# learnkit benchmarks (benchmarks/run.py, issue 14)\n")
    print(f"machine: {m['cpu']}, {m['cores']} cores, {m['os']}; {m['python']}; "
          f"SQLite {m['sqlite']}; learnkit {m['learnkit']}")
    print(f"load average {load_at_start}; speed check {speed_at_start:.2f} µs (sum(range(100)); "
          "higher is slower, compare with the end)")
    if otel_missing is None:
        from importlib.metadata import version
        print(f"reference: opentelemetry-sdk {version('opentelemetry-sdk')}")
    else:
        print(f"reference: OpenTelemetry SKIPPED: {otel_missing}")
    sizes = []
    if "tracking" in args.sections:
        sizes.append(f"{args.calls:,} calls per tracking figure")
    if "writer" in args.sections:
        sizes.append(f"{args.rows:,} rows per writer figure")
    stored = [x for x in ("trend", "summary", "import", "size") if x in args.sections]
    if stored:
        sizes.append(f"{ops_label(args.ops)} stored operations for {'/'.join(stored)}"
                     + (f" and {ops_label(args.big_ops)} (--big) for trend/size" if args.big
                        else ""))
    print(f"sizes: {', '.join(sizes)}{' (--quick)' if args.quick else ''}; "
          + (f"medians of {rounds} rounds" if rounds > 1 else "one round"))
    sys.stdout.flush()

    own_dir = args.workdir is None
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="learnkit-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    rows: list[tuple[str, str, str, str, str]] = []
    notes: list[str] = []
    checks: list[str] = []  # problems found
    confirmed: list[str] = []  # checks that passed
    verdicts: list[str] = []

    def verdict(measure: str, met: bool, why: str = "") -> None:
        verdicts.append(f"- {measure}: {'met' if met else 'NOT met'}{why}")

    try:
        if "tracking" in args.sections:
            tr = asyncio.run(tracking_section(workdir / "tracking", args.calls, rounds,
                                              otel_missing))
            for name, measure, *_, goal in CASES:
                r = tr[name]
                lk = median(r["learnkit"])
                if r["otel"]:
                    ot = median(r["otel"])
                    ratio = median(r["ratio"])
                    ref = f"OpenTelemetry span, BatchSpanProcessor, no-op exporter: {ot:.2f}"
                    rows.append((measure, f"{lk:.2f}", ref, fmt_ratio(ratio), f"<= {goal}x"))
                    verdict(measure, ratio <= goal, f" ({fmt_ratio(ratio)})")
                    if r["otel_dropped"]:
                        notes.append(f"OpenTelemetry dropped {r['otel_dropped']:,} spans "
                                     f"in {name}")
                else:
                    rows.append((measure, f"{lk:.2f}", "OpenTelemetry: not installed", "—",
                                 f"<= {goal}x"))
                notes.append(f"tracking {name}: learnkit +µs per round "
                             f"{spread(r['learnkit'], '.2f')}"
                             + (f"; OpenTelemetry {spread(r['otel'], '.2f')}" if r["otel"]
                                else ""))

        if "writer" in args.sections:
            wr = writer_section(workdir / "writer", args.rows, rounds)
            for name, label, goal in (
                ("realistic", "writer, realistic rows (4 context attributes, error messages "
                              "with ids), rows/s", 0.7),
                ("simple", "writer, simple rows (no context, success only), rows/s", 0.8),
            ):
                r = wr[name]
                lk, raw, ratio = median(r["learnkit"]), median(r["raw"]), median(r["ratio"])
                rows.append((label, f"{lk:,.0f} (flush alone {median(r['flush']):,.0f})",
                             f"raw sqlite3 executemany, same rows, same schema: {raw:,.0f}",
                             fmt_ratio(ratio), f">= {goal}x"))
                verdict(label, ratio >= goal, f" ({fmt_ratio(ratio)})")
                notes.append(f"writer {name} ({r['failures']:.0%} failures): learnkit rows/s "
                             f"per round {spread(r['learnkit'], ',.0f')}; flush alone "
                             f"{spread(r['flush'], ',.0f')}; raw {spread(r['raw'], ',.0f')}")
            if args.profile:
                profile_writer(workdir / "profile", args.rows)

        need_db = args.sections & {"trend", "summary", "import", "size"}
        if need_db:
            main_dir = workdir / "ops"
            built = build_db(main_dir, args.ops)
            label = ops_label(built["ops"])
            checks.extend(f"{label} database: {p}" for p in rollup_vs_rows(main_dir / "bench.db"))
            sizes = [(main_dir, built["ops"])]
            if args.big:
                big_dir = workdir / "ops-big"
                big = build_db(big_dir, args.big_ops)
                sizes.append((big_dir, big["ops"]))
            if "trend" in args.sections:
                for d, n in sizes:
                    t = asyncio.run(trend_rounds(d, rounds))
                    ms = median(t["times"]) * 1e3
                    measure = f"weekly trend over 52 weeks, {ops_label(n)} stored operations"
                    rows.append((measure, f"{ms:.1f} ms (get_weekly_trend(52))", "—", "—",
                                 "<= 15 ms"))
                    verdict(measure, ms <= 15, f" ({ms:.1f} ms)")
                    notes.append(f"trend {ops_label(n)}: get_weekly_trend(52) ms per round "
                                 f"{spread([x * 1e3 for x in t['times']], '.1f')}; first call "
                                 f"{t['first'] * 1e3:.1f} ms; 52 x get_success_rate(days=7, "
                                 f"offset=7k) {median(t['loop']) * 1e3:.1f} ms; "
                                 f"{t['weeks_n']:,} operations in the 52 windows")
                    checks.extend(f"trend {ops_label(n)}: {p}" for p in t["problems"])
            if "summary" in args.sections:
                s = asyncio.run(summary_rounds(main_dir, rounds))
                sec = median(s["times"])
                measure = f"`generate_summary(days=365)`, {label} operations in the window"
                rows.append((measure, f"{sec:.2f} s", "—", "—", "<= 2 s"))
                verdict(measure, sec <= 2, f" ({sec:.2f} s)")
                notes.append(f"summary: s per round {spread(s['times'], '.2f')}; first call "
                             f"{s['first']:.2f} s (imports numpy and scipy); sample_size "
                             f"{s['sample_size']:,}, {s['tests']} hypotheses, "
                             f"{s['clusters']} error clusters, {s['patterns']} patterns, "
                             f"{s['recommendations']} recommendations")
                checks.extend(f"summary: {p}" for p in s["problems"])
            imported = None
            if "import" in args.sections:
                im = import_section(main_dir, rounds)
                lk, ref, ratio = median(im["learnkit"]), median(im["json"]), median(im["ratio"])
                measure = f"`learnkit import`, {ops_label(im['lines'])} JSON lines, lines/s"
                rows.append((measure, f"{lk:,.0f}", f"json.loads per line alone: {ref:,.0f}",
                             fmt_ratio(ratio), ">= 150,000 lines/s"))
                verdict(measure, lk >= 150_000, f" ({lk:,.0f} lines/s)")
                notes.append(f"import: lines/s per round {spread(im['learnkit'], ',.0f')} "
                             f"(wall clock of the command, interpreter start included); "
                             f"json.loads {spread(im['json'], ',.0f')}")
                checks.extend(f"import: {p}" for p in im["problems"])
                if not im["problems"]:
                    confirmed.append("every rollup row of the built database matches the "
                                     "database `learnkit import` wrote from its export")
                imported = im["db"]
            if "size" in args.sections:
                for d, _n in sizes:
                    z = db_size(d / "bench.db")
                    ro = " · ".join(f"{t} {fmt_count(c)}" for t, c in z["rollups"].items())
                    measure = (f"database size per million operations, {ops_label(z['ops'])} "
                               "stored (rollups and indexes included)")
                    rows.append((measure, f"{z['mib_per_m']:,.0f} MiB; rollup rows: {ro}",
                                 "—", "—", "<= 200 MiB"))
                    verdict(measure, z["mib_per_m"] <= 200, f" ({z['mib_per_m']:,.0f} MiB)")
                    if z["objects"]:
                        notes.append(f"size {ops_label(z['ops'])}: {z['bytes'] / 2**20:,.0f} "
                                     "MiB in all; " + ", ".join(
                                         f"{k} {v / 2**20:,.0f}" for k, v in
                                         list(z["objects"].items())[:8]) + " MiB")
                if imported is not None:
                    z = db_size(imported)
                    notes.append(f"size of the database learnkit import wrote ({z['ops']:,} "
                                 f"operations): {z['mib_per_m']:,.0f} MiB per million")
            if args.big and not args.keep:
                shutil.rmtree(workdir / "ops-big", ignore_errors=True)
    finally:
        if own_dir and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)

    print()
    print(table(rows))
    print("\nGoals:")
    print("\n".join(verdicts))
    if need_db:
        print("\nConsistency checks:")
        if not checks:
            confirmed.insert(0, "rollup totals agree with the rows; the API's weekly and "
                                "summary counts agree with counts of rows")
        print("\n".join([*(f"- PROBLEM: {c}" for c in checks), *(f"- {c}" for c in confirmed)]))
    print("\nDetails (each round):")
    print("\n".join(f"- {n}" for n in notes))
    print("\nEvery figure includes the writer's work and ends with all records durable "
          "(the clock stops when `await kit.flush()` returns, or when `learnkit import` "
          "exits). A ratio is the median of the per-round ratios, so it need not equal "
          "the ratio of the medians.")
    print(f"At the end: load average {load()}, speed check {speed_check():.2f} µs "
          f"(at the start: {load_at_start}, {speed_at_start:.2f} µs); other work on the "
          "machine slows every figure.")
    return 1 if checks else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.build_db is not None:
        build_main(args.build_db, args.build_ops or args.ops)
        return 0
    # A terminated run still removes its databases (the finally in run()).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
