"""PostgreSQL against SQLite: write throughput and query latency, one and several writers.

    LEARNKIT_BENCH_PG_URL=postgresql://user@host/db python benchmarks/bench_postgres.py \
        [--rows N] [--procs 1,4] [--durable]

(``LEARNKIT_TEST_PG_URL`` is used when the first is not set; .ci/postgres.sh
starts a throwaway server.) Each run gets a schema of its own, dropped at the
end. Prints one Markdown table:

- *write*: operations per second from ``kit.record`` to durable (``flush``),
  timed from a common start once every process has opened its store, for 1
  and for P processes writing at once (each N / P operations, with
  context and an error message on a third of them, spread over a week);
- *store rows/s*: what the store alone takes, one process writing batches
  of 2,000 prepared operations (few distinct contexts and messages) into
  the same database;
- *query*: median milliseconds of ``get_success_rate(days=7)`` (rollups plus
  edge rows), ``window_stats`` over 7 days (all four rollups) and
  ``generate_summary(days=7)`` (the whole analysis), on the data written.

With ``--durable`` the server is set to ``fsync = on`` and
``synchronous_commit = on`` for the run (needs a superuser), so that both
stores wait for the disk as configured by default; SQLite runs in WAL mode
with ``synchronous = NORMAL`` as learnkit opens it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.parse
import uuid
from pathlib import Path

import learnkit

CONFIG = '[learning]\nenabled = false\n[storage]\npath = "bench.db"\n'
T0 = 1_790_000_000.0
DAY = 86400.0

WRITER = textwrap.dedent("""
    import asyncio, random, sys
    import learnkit

    async def main(config, tag, n):
        r = random.Random(tag)
        async with learnkit.open(config, learning_loop=False) as kit:
            print("READY", flush=True)
            sys.stdin.readline()  # every writer starts at once
            for i in range(n):
                cx = r.randint(1, 12)
                fail = r.random() < cx / 15
                end = %r - r.uniform(0, 7 * 86400)
                kit.record("run_tests", outcome="failure" if fail else "success",
                           started_at=end - 2, ended_at=end, key=f"{tag}-{i}",
                           error_type="TestFailure" if fail else None,
                           error_message=f"test_{i %% 40} failed after {i} s" if fail else None,
                           context={"complexity": cx, "lang": r.choice(["go", "py", "rs"])})
                if i %% 500 == 0:
                    await asyncio.sleep(0)
            assert await kit.flush()
            print("DONE", flush=True)

    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
""") % (T0,)


def with_schema(url: str, schema: str) -> str:
    parts = urllib.parse.urlsplit(url)
    query = dict(urllib.parse.parse_qsl(parts.query))
    query["search_path"] = schema
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


async def pg(url: str, *queries: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        for q in queries:
            await conn.execute(q)
    finally:
        await conn.close()


def write(config: Path, env: dict[str, str], rows: int, procs: int) -> float:
    """Operations per second, P processes writing rows / P each at once (wall clock)."""
    each = rows // procs
    ps = [subprocess.Popen([sys.executable, "-c", WRITER, str(config), f"p{k}", str(each)],
                           env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
          for k in range(procs)]
    for p in ps:  # started, imported, store open: time only the writing
        assert p.stdout is not None and p.stdout.readline().strip() == "READY"
    t = time.perf_counter()
    for p in ps:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    for p in ps:
        out, _ = p.communicate()
        assert p.returncode == 0 and out.strip() == "DONE"
    return each * procs / (time.perf_counter() - t)


async def bulk(config: Path, rows: int, batch: int = 2000) -> float:
    """Rows per second the store itself takes: batches of prepared operations
    (few distinct contexts and messages), prepare and commit, one process."""
    from learnkit._model import Operation

    ops = []
    for i in range(rows):
        op = Operation("run_tests", f"b-{i}", {"complexity": i % 12, "lang": "go"},
                       T0 - i, 0.0, None)
        op.ended_at, op.duration = T0 - i + 1, 1.0
        op.outcome = "failure" if i % 3 == 0 else "success"
        if op.outcome == "failure":
            op.error_type, op.error_message = "TestFailure", f"test_{i % 40} failed"
        ops.append(op)
    async with learnkit.open(config, learning_loop=False) as kit:
        store = kit.database.store
        t = time.perf_counter()
        for k in range(0, rows, batch):
            # What the writer does with a batch, on either store.
            chunk = ops[k : k + batch]
            await store.reserve_ids(2 * len(chunk))
            await store.commit(store.prepare(chunk, []))  # type: ignore[attr-defined]
        return rows / (time.perf_counter() - t)


async def query_ms(config: Path, repeat: int = 7) -> dict[str, float]:
    class Clock:
        def __call__(self) -> float:
            return T0

    out: dict[str, float] = {}
    async with learnkit.open(config, clock=Clock(), learning_loop=False) as kit:
        store = kit.database.store
        jobs = {
            "success_rate_7d": lambda: kit.analytics.get_success_rate(days=7),
            "window_stats_7d": lambda: store.window_stats(T0 - 7 * DAY + 1234.5, T0),
            "summary_7d": lambda: kit.insights.generate_summary(days=7),
        }
        for name, job in jobs.items():
            times = []
            for _ in range(repeat):
                kit.insights.invalidate()
                t = time.perf_counter()
                await job()
                times.append((time.perf_counter() - t) * 1000)
            out[name] = statistics.median(times)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--procs", default="1,4")
    ap.add_argument("--durable", action="store_true")
    args = ap.parse_args()
    base = os.environ.get("LEARNKIT_BENCH_PG_URL") or os.environ.get("LEARNKIT_TEST_PG_URL")
    if not base:
        sys.exit("set LEARNKIT_BENCH_PG_URL (or LEARNKIT_TEST_PG_URL) to a PostgreSQL database")
    procs = [int(p) for p in args.procs.split(",")]
    root = Path(__file__).resolve().parents[1]
    results: dict[tuple[str, int], tuple[float, dict[str, float]]] = {}
    if args.durable:
        asyncio.run(pg(base, "ALTER SYSTEM SET fsync = on",
                       "ALTER SYSTEM SET synchronous_commit = on", "SELECT pg_reload_conf()"))
    try:
        for backend in ("sqlite", "postgresql"):
            for n in procs:
                with tempfile.TemporaryDirectory() as d:
                    config = Path(d) / "learnkit.toml"
                    config.write_text(CONFIG)
                    env = {**os.environ, "PYTHONPATH": str(root)}
                    env.pop("LEARNKIT_DATABASE_URL", None)
                    schema = f"bench_{uuid.uuid4().hex[:12]}"
                    if backend == "postgresql":
                        asyncio.run(pg(base, f"CREATE SCHEMA {schema}"))
                        env["LEARNKIT_DATABASE_URL"] = with_schema(base, schema)
                    try:
                        rate = write(config, env, args.rows, n)
                        os.environ.pop("LEARNKIT_DATABASE_URL", None)
                        if backend == "postgresql":
                            os.environ["LEARNKIT_DATABASE_URL"] = env["LEARNKIT_DATABASE_URL"]
                        q = asyncio.run(query_ms(config))
                        if n == 1:
                            q["bulk"] = asyncio.run(bulk(config, args.rows))
                        os.environ.pop("LEARNKIT_DATABASE_URL", None)
                    finally:
                        if backend == "postgresql":
                            asyncio.run(pg(base, f"DROP SCHEMA {schema} CASCADE"))
                    results[(backend, n)] = (rate, q)
                    print(f"{backend} x{n}: {rate:,.0f} ops/s, {q}", file=sys.stderr)
    finally:
        if args.durable:
            asyncio.run(pg(base, "ALTER SYSTEM RESET fsync",
                           "ALTER SYSTEM RESET synchronous_commit", "SELECT pg_reload_conf()"))
    print(f"\n{args.rows:,} operations over 7 days, {os.cpu_count()} cores"
          f"{', PostgreSQL durable (fsync, synchronous_commit on)' if args.durable else ''}\n")
    print("| store | writers | end-to-end ops/s | store rows/s | success_rate 7d ms |"
          " window_stats 7d ms | summary 7d ms |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for (backend, n), (rate, q) in results.items():
        b = f"{q['bulk']:,.0f}" if "bulk" in q else ""
        print(f"| {backend} | {n} | {rate:,.0f} | {b} | {q['success_rate_7d']:.1f} |"
              f" {q['window_stats_7d']:.1f} | {q['summary_7d']:.0f} |")


if __name__ == "__main__":
    main()
