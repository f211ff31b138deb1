"""The ``learnkit`` command: dashboard, report, insights, thresholds, import/export, demo.

``main(argv) -> int`` holds the whole command so tests can call it; every
failure the user can cause ends in one line on stderr naming the problem
and the fix, and a non-zero exit code; never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, NoReturn

import attrs

import learnkit

from . import _env
from ._errors import LearnkitError
from ._model import DAY

__all__ = ["entrypoint", "main", "summary_to_json"]

JSON_VERSION = 1

STARTER = """\
[learning]
enabled = true
analysis_interval = 86400
min_samples = 10
confidence_threshold = 0.7
auto_apply = true
failure_cost = 1.0

[storage]
path = "learnkit.db"

[thresholds.max_complexity]
value = 8
attribute = "complexity"
limit = "max"
min = 3
max = 12
step = 1
description = "Largest issue complexity the orchestrator attempts"
"""


class CliError(Exception):
    """A problem to report in one line, with an exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise CliError(f"{message} (see `learnkit {self.prog.split()[-1]} --help`)"
                       if " " in self.prog else f"{message} (see `learnkit --help`)", 2)


# -- plumbing -----------------------------------------------------------------------


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


@contextlib.asynccontextmanager
async def _kit(
    args: argparse.Namespace, *, need_data: bool = True, read_only: bool = True
) -> Any:
    """Open the kit for a read command, refusing a missing or empty database."""
    from ._storage.factory import database_url, is_postgres, sqlite_path

    cfg = learnkit.load_config(args.config)
    where = sqlite_path(cfg)
    # A server has no file to look for: an empty store is found below.
    if need_data and not is_postgres(database_url(cfg)) and not where.exists():
        raise CliError(
            f"no database at {where} yet: nothing has been recorded; run your "
            "instrumented program, `learnkit import FILE`, or `learnkit demo`"
        )
    # Nothing to read: create it. A PostgreSQL store has no read-only mode (a server
    # is shared: reading it is harmless, and a read-only role is the way to enforce it).
    read_only = read_only and not is_postgres(database_url(cfg)) and where.exists()
    async with learnkit.open(args.config, learning_loop=False, read_only=read_only,
                             clock=getattr(args, "clock", None)) as kit:
        if need_data:
            if not await kit.database.store.has_operations():
                raise CliError(
                    f"the database {kit.database.store.location} has no operations yet; "
                    "record some "
                    "(see docs/getting-started.md) or run `learnkit import FILE`"
                )
        yield kit


def _positive(unit: str, most: float = math.inf) -> Callable[[str], float]:
    """An argparse type: a positive, finite number of ``unit``, at most ``most``."""

    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number of {unit}") from None
        if not (v > 0 and math.isfinite(v)):
            raise argparse.ArgumentTypeError(f"{unit} must be positive, got {text}")
        if v > most:
            raise argparse.ArgumentTypeError(
                f"{unit} must be at most {most:g} (ten years, as learning.window_days), "
                f"got {text}")
        return v

    return parse


_days = _positive("days", 3660)
#: One default window for every analysis: the API's, the loop's and these commands'.
WINDOW_HELP = "window in days (default: learning.window_days in learnkit.toml, 7 unless set)"
_seconds = _positive("seconds")


def _learnkit_files(args: argparse.Namespace) -> list[Path]:
    """The files learnkit keeps for this config: the config, the database and its
    companions (never an --output)."""
    config = Path(args.config)
    files = [config]
    try:
        db = learnkit.load_config(config).database_path
    except Exception:  # no config yet, or one that does not load: only itself
        return files
    files.append(db)
    files += [db.with_name(db.name + s) for s in ("-wal", "-shm", "-journal")]
    return files


def _check_output(path: Path, args: argparse.Namespace) -> None:
    """Refuse to write over learnkit's own files, or over any existing file
    without ``--force``."""
    target = path.resolve()
    config, *store = _learnkit_files(args)
    for own in (config, *store):
        mine = own.resolve()
        if target == mine or (target.parent == mine.parent
                              and target.name.startswith(mine.name + ".spill-")):
            what = "config" if own is config else "database"
            raise CliError(f"{path} is learnkit's own {what} file; choose another --output", 2)
    if (path.exists() or path.is_symlink()) and not getattr(args, "force", False):
        raise CliError(f"{path} already exists; pass --force to replace it", 2)


def _write_output(path: Path | None, text: str, out: IO[str]) -> None:
    """``text`` to stdout, or to ``path`` (checked by the caller: see _check_output)."""
    if path is None:
        out.write(text)
        return
    # A new file renamed into place: a link at ``path`` is replaced, not written
    # through, and a reader never sees half a report.
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror}; choose a writable path "
                       "with --output") from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    print(f"wrote {path}", file=out)


@contextlib.contextmanager
def _progress(label: str, total: int | None, enabled: bool) -> Iterator[Callable[[int], None]]:
    """A progress bar on a terminal; nothing when piped."""
    if not enabled:
        yield lambda n: None
        return
    from rich.progress import Progress

    with Progress(transient=True) as progress:
        task = progress.add_task(label, total=total)
        yield lambda n: progress.update(task, completed=n)


def summary_to_json(summary: learnkit.Summary) -> dict[str, Any]:
    """The stable, documented machine-readable form of a summary (``--json``)."""

    def clean(v: Any) -> Any:
        if isinstance(v, float):
            return v if math.isfinite(v) else None
        if isinstance(v, dict):
            return {str(k): clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        if attrs.has(type(v)):
            return clean(attrs.asdict(v, recurse=False))
        return v

    return {
        "version": JSON_VERSION,
        "window": {"days": summary["days"], "offset": summary["offset"],
                   "start": summary["start"], "end": summary["end"]},
        "success_rate": clean(summary["success_rate"]),
        "sample_size": summary["sample_size"],
        "outcome_counts": summary["outcome_counts"],
        "rates_by_type": {
            t: {"rate": clean(r.rate), "successes": r.successes, "failures": r.failures,
                "low": clean(r.low), "high": clean(r.high), "counts": r.counts}
            for t, r in summary["rates_by_type"].items()
        },
        "failure_patterns": clean(summary["failure_patterns"]),
        "error_clusters": clean(summary["error_clusters"]),
        "recommendations": [
            {**clean({k: v for k, v in attrs.asdict(r, recurse=False).items()
                      if k != "evidence"}),
             "evidence": clean(list(r.evidence))}
            for r in summary["recommendations"]
        ],
        "actions": summary["actions"],
        "recommended_thresholds": summary["recommended_thresholds"],
        "tests": summary["tests"],
    }


# -- commands -----------------------------------------------------------------------


async def cmd_init(args: argparse.Namespace, out: IO[str]) -> int:
    path = Path(args.path or args.config)
    if path.exists() and not args.force:
        raise CliError(f"{path} already exists; pass --force to replace it")
    _write_output(path, STARTER, out)
    return 0


async def cmd_dashboard(args: argparse.Namespace, out: IO[str]) -> int:
    from ._views.render import collect, dashboard_rich, dashboard_text

    rich = _isatty(out) and not args.plain
    times = 0
    async with _kit(args) as kit:
        while True:
            snap = await collect(kit, kit.insights.window(args.days))
            if rich:
                from rich.console import Console

                console = Console(file=out)
                if args.watch:
                    console.clear()
                dashboard_rich(snap, console)
            else:
                out.write(dashboard_text(snap))
            times += 1
            if not args.watch or (args.times and times >= args.times):
                return 0
            out.flush()
            await asyncio.sleep(args.watch)


async def cmd_report(args: argparse.Namespace, out: IO[str]) -> int:
    from ._views.render import collect, report_html, report_markdown

    fmt = args.format or ("html" if args.output and args.output.suffix in (".html", ".htm")
                          else "md")
    if args.output is not None:
        _check_output(args.output, args)  # before the work, not after
    async with _kit(args) as kit:
        snap = await collect(kit, kit.insights.window(args.days), detailed=args.detailed)
    render = report_html if fmt == "html" else report_markdown
    _write_output(args.output, render(snap, detailed=args.detailed), out)
    return 0


async def cmd_insights(args: argparse.Namespace, out: IO[str]) -> int:
    from ._views.render import (
        cluster_line,
        collect,
        details,
        findings,
        pct,
        rec_details,
        rec_short,
        short,
        window_text,
    )

    async with _kit(args) as kit:
        if args.json:
            days = args.days or kit.config.learning.window_days
            summary = await kit.insights.generate_summary(days)
            out.write(json.dumps(summary_to_json(summary), indent=2, default=str) + "\n")
            return 0
        if _isatty(sys.stderr):
            from rich.console import Console

            with Console(stderr=True).status("analysing..."):
                snap = await collect(kit, args.days)
        else:
            snap = await collect(kit, args.days)
    summary = snap.summary
    print(f"{window_text(snap)}: success rate {pct(snap.top.rate)} over "
          f"{snap.top.n:,} top-level operations ({pct(summary['success_rate'])} over all "
          f"{summary['sample_size']:,}, nested included); {summary['tests']} hypotheses "
          "scanned", file=out)
    shown, hidden = findings(snap)
    print("\nfailure patterns (strong: confidence >= "
          f"{snap.confidence_threshold:g}; suggestive: >= {snap.display_floor:g}):", file=out)
    for t, p in shown:
        print(f"  {t:<10} {short(p)}\n  {'':<10} confidence {p.confidence or 0:.2f}; "
              f"{details(p)}", file=out)
    if not shown:
        print("  none", file=out)
    if hidden:
        print(f"  ({hidden} below confidence {snap.display_floor:g} not shown)", file=out)
    print("\nerror clusters:", file=out)
    for c in summary["error_clusters"][:10]:
        print(f"  {c.count:>6,}  {pct(c.share_of_failures, 0):>4}  {c.trend:<8} "
              f"{cluster_line(c)}", file=out)
    if not summary["error_clusters"]:
        print("  none", file=out)
    print("\nrecommendations:", file=out)
    for r in summary["recommendations"]:
        print(f"  - {rec_short(r)}  ({rec_details(r)})", file=out)
    if not summary["recommendations"]:
        print(f"  none at confidence >= {snap.confidence_threshold:g}", file=out)
    return 0


async def cmd_thresholds(args: argparse.Namespace, out: IO[str]) -> int:
    from ._views.render import change_line, threshold_line

    action = args.action or "show"
    if action == "rollback" and not args.name:
        raise CliError("thresholds rollback needs the threshold's NAME", 2)
    if action != "rollback" and args.name:
        raise CliError(f"`thresholds {action}` takes no name", 2)
    async with _kit(args, need_data=action == "apply",
                    read_only=action not in ("apply", "rollback")) as kit:
        if action == "show":
            if not kit.config.thresholds:
                print(f"no thresholds in {kit.config.path}", file=out)
            history = await kit.controller.history()
            for name, th in kit.config.thresholds.items():
                print(threshold_line(name, th), file=out)
                if th.description:
                    print(f"  {th.description}", file=out)
                last = [c for c in history if c.name == name][-1:]
                for c in last:
                    print(f"  last change: {change_line(c)}", file=out)
        elif action == "history":
            history = await kit.controller.history()
            for c in history:
                print(change_line(c), file=out)
                if c.reason:
                    print(f"    {c.reason}", file=out)
            if not history:
                print("no threshold changes recorded", file=out)
        elif action == "apply":
            lc = kit.config.learning
            summary = await kit.insights.generate_summary(lc.window_days)
            made = await kit.controller.apply(summary)
            for c in made:
                print(f"applied: {change_line(c)}", file=out)
            if not made:
                wanted = summary["recommended_thresholds"]
                print("nothing applied" + (f" (recommended {wanted}, held back by the guard "
                                           "rails: see the log)" if wanted else
                                           f": no threshold recommendation at confidence >= "
                                           f"{lc.confidence_threshold}"), file=out)
            print(f"analysed the last {lc.window_days:g} days (learning.window_days, the "
                  "default window of every analysis)", file=out)
        else:
            c = await kit.controller.rollback(args.name)
            print(f"rolled back: {change_line(c)}", file=out)
    return 0


class _Reporter:
    """Progress of a long transfer: a bar on a terminal, else a line every few seconds."""

    def __init__(self, label: str, total: int | None, unit: str, err: IO[str]) -> None:
        import time

        self._time = time.monotonic
        self._label, self._total, self._unit, self._err = label, total, unit, err
        self._tty = _isatty(err)
        self._next = self._time() + 1.0  # the first line after a second, then every 5
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> _Reporter:
        if self._tty:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            columns: list[Any] = [TextColumn("{task.description}"), BarColumn()]
            if self._unit == "bytes":
                columns += [DownloadColumn(), TimeRemainingColumn()]
            else:
                columns += [TextColumn("{task.completed:,.0f} rows")]
            self._progress = Progress(*columns, console=Console(file=self._err),
                                      transient=True)
            self._progress.__enter__()
            self._task = self._progress.add_task(self._label, total=self._total)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(None, None, None)

    def __call__(self, done: int, note: str = "") -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=done)
            return
        now = self._time()
        if now >= self._next:
            self._next = now + 5.0
            of = f" of {self._total:,}" if self._total else ""
            print(f"learnkit: {self._label}: {done:,}{of} {self._unit}{note}", file=self._err,
                  flush=True)


async def cmd_import(args: argparse.Namespace, out: IO[str]) -> int:
    from ._transfer import InvalidRecords, Problems, Source, read_records

    path = Path(args.file)
    if not path.is_file():
        raise CliError(f"no such file {path}; pass a JSON Lines, CSV or Parquet file of "
                       "outcomes")
    source = Source(path, args.format)
    cfg = learnkit.load_config(args.config)
    db = cfg.database_path
    created = not db.exists()
    problems = Problems()
    err = sys.stderr

    def report_problems() -> None:
        for p in problems.first:
            print(f"learnkit: {path}:{p.line}: {p.message}", file=err)
        if problems.count > len(problems.first):
            print(f"learnkit: ... and {problems.count - len(problems.first):,} more", file=err)

    result = None
    # Ctrl-C must reach the event loop while the import runs in the store's
    # thread: a handler through the loop (which wakes it) cancels this task, and
    # the import rolls back at its next chunk.
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    watching = False
    if task is not None:
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGINT, task.cancel)
            watching = True
    try:
        async with _kit(args, need_data=False, read_only=False) as kit:
            store = kit.database.store
            records = read_records(source, problems, skip_invalid=args.skip_invalid)
            with _Reporter(f"importing {path.name}", source.size, "bytes", err) as step:
                result = await store.import_operations(
                    records, progress=lambda _n: step(source.position))
    except InvalidRecords:
        report_problems()
        raise CliError(f"{problems.count:,} invalid line(s) in {path}; nothing was imported. "
                       "Fix them, or pass --skip-invalid to import the rest") from None
    except (KeyboardInterrupt, asyncio.CancelledError):
        raise CliError(f"import of {path} interrupted: nothing was imported (an import is "
                       "one transaction); run it again", 130) from None
    finally:
        if watching:
            loop.remove_signal_handler(signal.SIGINT)
        if result is None and created:  # leave no database behind that we made
            for f in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
                with contextlib.suppress(OSError):
                    f.unlink()
    assert result is not None
    if not result.added and not result.duplicates:
        if problems.count:
            report_problems()
        raise CliError(f"{path} holds no records to import")
    print(f"imported {result.added:,} operation(s) from {path}" + (
        f"; {result.duplicates:,} already in the database (imported before), not added again"
        if result.duplicates else ""), file=out)
    for p in problems.first:
        print(f"skipped line {p.line}: {p.message}", file=out)
    if problems.count > len(problems.first):
        print(f"... and {problems.count - len(problems.first):,} more skipped", file=out)
    return 0


async def cmd_export(args: argparse.Namespace, out: IO[str]) -> int:
    from ._transfer import format_of, write_rows

    fmt = args.format or (format_of(args.output, None) if args.output else "jsonl")
    if fmt == "parquet" and args.output is None:
        raise CliError("Parquet is binary: pass --output FILE.parquet", 2)
    if args.output is not None:
        _check_output(args.output, args)
    async with _kit(args) as kit:
        store = kit.database.store
        since = kit.now() - args.days * DAY if args.days else None
        attributes = await store.context_attributes(since=since) if fmt == "csv" else None
        rows = store.export_rows(since=since)
        label = f"exporting to {args.output.name}" if args.output else "exporting"
        with _Reporter(label, None, "rows", sys.stderr) as step:
            if args.output is None:
                n = await write_rows(rows, fmt, out, attributes=attributes, progress=step)
            elif fmt == "parquet":
                n = await write_rows(rows, fmt, args.output, progress=step)
            else:
                tmp = args.output.with_name(f".{args.output.name}.tmp")
                try:
                    with tmp.open("w", encoding="utf-8", newline="") as f:
                        n = await write_rows(rows, fmt, f, attributes=attributes,
                                             progress=step)
                    tmp.replace(args.output)
                except OSError as exc:
                    raise CliError(f"cannot write {args.output}: {exc.strerror}; choose a "
                                   "writable path with --output") from None
                finally:
                    with contextlib.suppress(OSError):
                        tmp.unlink()
    if args.output:
        print(f"exported {n:,} operation(s) to {args.output}", file=out)
    return 0


async def cmd_migrate(args: argparse.Namespace, out: IO[str]) -> int:
    from ._storage.factory import is_postgres, postgres_store
    from ._storage.migrate import migrate_sqlite
    from ._storage.postgres import redact_url

    cfg = learnkit.load_config(args.config)
    if not is_postgres(args.to):
        raise CliError(f"--to must be a postgresql://user@host:5432/db URL, got "
                       f"{redact_url(args.to)!r}", 2)
    source = cfg.database_path  # the file of [storage] path, whatever the environment says
    target = postgres_store(args.to, cfg)
    with _progress(f"migrating {source.name}", None, _isatty(sys.stderr)) as step:
        report = await migrate_sqlite(
            source, target, {n: t.value for n, t in cfg.thresholds.items()},
            force=args.force, progress=step,
        )
    print(f"migrated {report.operations:,} operation(s) from {source} to {target.location}"
          f" ({report.abandoned:,} still running there, now abandoned), "
          f"{report.rollup_rows:,} rollup row(s), {report.changes:,} threshold change(s); "
          f"{report.thresholds_seeded} threshold value(s) seeded", file=out)
    print(f"next: set [storage] url = \"{target.location}\" in {cfg.path}", file=out)
    return 0


async def cmd_demo(args: argparse.Namespace, out: IO[str]) -> int:
    import time

    from .demo import DAY as DEMO_DAY
    from .demo import check_folder, simulate, table

    workdir = Path(args.dir)
    if workdir.is_dir():
        try:
            check_folder(workdir, force=args.force)
        except FileExistsError as exc:
            raise CliError(str(exc)) from None
    try:
        workdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CliError(f"cannot create {workdir}: {exc.strerror}; pass a writable DIR") from None
    print(f"learnkit demo: four simulated weeks of an orchestrator in {workdir}/", file=out)
    print("Issues of complexity 1-12 arrive; harder ones fail more; max_complexity starts at "
          "8 and the learning loop runs once a day.\n", file=out)
    with _progress("simulating 28 days", 28, _isatty(sys.stderr)) as step:
        start = (time.time() // DEMO_DAY) * DEMO_DAY - 28 * DEMO_DAY
        rows = await simulate(workdir, seed=args.seed, start=start, progress=step,
                              force=args.force)
    print(table(rows), file=out)
    print("\nSuccess rose because the threshold refused the hardest issues: coverage is the "
          "share of offered issues attempted. Utility (success +1, failure -1, refused 0) "
          "says whether that trade paid.\n", file=out)
    args.config = str(workdir / "learnkit.toml")
    args.days, args.watch, args.plain, args.times = None, None, False, None
    end = start + 28 * DEMO_DAY
    args.clock = lambda: end  # as of the simulation's end: the table's weeks, same figures
    await cmd_dashboard(args, out)
    cfg = workdir / "learnkit.toml"
    print(f"\nNext: learnkit --config {cfg} report --days 30 --detailed --output report.md",
          file=out)
    return 0


async def cmd_alerts(args: argparse.Namespace, out: IO[str]) -> int:
    from ._alerts import Alerts, redact, sample

    cfg = learnkit.load_config(args.config)
    targets = cfg.alerts.targets
    if args.target:
        missing = [t for t in args.target if t not in targets]
        if missing:
            raise CliError(f"no target {missing[0]!r} in {cfg.path} (defined: "
                           f"{', '.join(sorted(targets)) or 'none'})", 2)
        targets = {t: targets[t] for t in args.target}
    if not targets:
        raise CliError(f"no [alerts.targets.NAME] table in {cfg.path}; see docs/alerts.md", 2)
    ac = attrs.evolve(cfg.alerts, targets=targets, min_interval=0.0)
    alerts = Alerts(lambda: ac, source=str(cfg.path))
    alerts.publish([sample()])
    await alerts.drain()
    await alerts.aclose(1.0)
    stats = alerts.stats()
    failed = 0
    for name, tc in targets.items():
        st = stats[name]
        url = tc.url or os.environ.get(tc.url_env, "")
        where = redact(url) if url else f"${tc.url_env} (not set)"
        if st.sent:
            print(f"{name}: sent ({tc.format}) to {where}", file=out)
        else:
            failed += 1
            print(f"{name}: FAILED ({tc.format}) to {where}: {st.last_error}", file=out)
    return 1 if failed else 0


async def cmd_gate(args: argparse.Namespace, out: IO[str]) -> int:
    from ._gate import NO_DATA, USAGE, GateError, options, run_gate

    try:
        opts = options(args)
        cfg = learnkit.load_config(args.config)
    except GateError as exc:
        raise CliError(str(exc), exc.code) from None
    except LearnkitError as exc:  # a missing or invalid config: a usage error
        raise CliError(str(exc), USAGE) from None
    from ._storage.factory import database_url, is_postgres, sqlite_path

    if not is_postgres(database_url(cfg)) and not sqlite_path(cfg).exists():
        raise CliError(f"no database at {sqlite_path(cfg)}: nothing to judge", NO_DATA)
    async with _kit(args, need_data=False) as kit:
        try:
            return await run_gate(opts, kit.database.store, kit.config, kit.now(), out)
        except GateError as exc:
            raise CliError(str(exc), exc.code) from None


async def cmd_mcp(args: argparse.Namespace, out: IO[str]) -> int:
    try:
        from ._mcp import serve
    except ImportError as exc:
        raise CliError(f"`learnkit mcp` needs the MCP SDK ({exc.name or exc}): "
                       "pip install 'learnkit[mcp]'", 2) from None
    cfg = learnkit.load_config(args.config)
    if not args.allow_apply and not cfg.database_path.exists():
        raise CliError(f"no database at {cfg.database_path} yet: the read-only server has "
                       "nothing to read; record some operations first")
    return await serve(args.config, allow_apply=args.allow_apply)


# -- the parser -----------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument("--config", default=argparse.SUPPRESS, metavar="PATH",
                        help="learnkit.toml (default: $LEARNKIT_CONFIG, else ./learnkit.toml)")
    p = _Parser(prog="learnkit", description="Learn from an orchestrator's own mistakes.")
    p.add_argument("--config", default=_env.config_path(), metavar="PATH",
                   help="learnkit.toml (default: $LEARNKIT_CONFIG, else ./learnkit.toml)")
    p.add_argument("--version", action="version", version=f"learnkit {learnkit.__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    s = sub.add_parser("init", parents=[common], help="write a starter learnkit.toml")
    s.add_argument("path", nargs="?", help="where (default: the --config path)")
    s.add_argument("--force", action="store_true", help="replace an existing file")
    s.set_defaults(run=cmd_init)

    s = sub.add_parser("demo", parents=[common],
                       help="simulate four weeks with the learning loop, then show the dashboard")
    s.add_argument("dir", nargs="?", default="learnkit-demo",
                   help="directory for its config and database (default: ./learnkit-demo)")
    s.add_argument("--seed", type=int, default=7, help="random seed of the simulation")
    s.add_argument("--force", action="store_true",
                   help="replace a learnkit.toml and database the demo did not write")
    s.set_defaults(run=cmd_demo)

    s = sub.add_parser("dashboard", parents=[common], help="rates, trend, patterns, thresholds")
    s.add_argument("--days", type=_days, help=WINDOW_HELP)
    s.add_argument("--watch", type=_seconds, metavar="SECONDS", help="refresh every SECONDS")
    s.add_argument("--plain", action="store_true", help="plain text even on a terminal")
    s.add_argument("--times", type=int, help=argparse.SUPPRESS)
    s.set_defaults(run=cmd_dashboard)

    s = sub.add_parser("report", parents=[common], help="a Markdown or HTML report")
    s.add_argument("--days", type=_days, help=WINDOW_HELP)
    s.add_argument("--detailed", action="store_true",
                   help="add per-type and per-cluster sections with example messages")
    s.add_argument("--output", type=Path, metavar="FILE", help="write here (default: stdout)")
    s.add_argument("--force", action="store_true", help="replace an existing --output file")
    s.add_argument("--format", choices=("md", "html"),
                   help="md or html (default: from --output's suffix, else md)")
    s.set_defaults(run=cmd_report)

    s = sub.add_parser("insights", parents=[common], help="the analysis summary")
    s.add_argument("--days", type=_days, help=WINDOW_HELP)
    s.add_argument("--json", action="store_true", help="machine-readable (see docs/cli.md)")
    s.set_defaults(run=cmd_insights)

    s = sub.add_parser("thresholds", parents=[common],
                       help="show, history, apply, or rollback NAME")
    s.add_argument("action", nargs="?", choices=("show", "history", "apply", "rollback"))
    s.add_argument("name", nargs="?", help="the threshold, for rollback")
    s.set_defaults(run=cmd_thresholds)

    s = sub.add_parser("import", parents=[common], help="import past outcomes")
    s.add_argument("file", help="JSON Lines, CSV or Parquet (see docs/cli.md)")
    s.add_argument("--format", choices=("jsonl", "csv", "parquet"),
                   help="default: from the suffix (.csv, .parquet; else JSON Lines)")
    s.add_argument("--skip-invalid", action="store_true",
                   help="import the valid lines and list the skipped ones")
    s.set_defaults(run=cmd_import)

    s = sub.add_parser("export", parents=[common], help="export outcomes")
    s.add_argument("--days", type=_days, help="only the last N days (default: everything)")
    s.add_argument("--format", choices=("jsonl", "csv", "parquet"),
                   help="default: from --output's suffix, else JSON Lines")
    s.add_argument("--output", type=Path, metavar="FILE", help="write here (default: stdout)")
    s.add_argument("--force", action="store_true", help="replace an existing --output file")
    s.set_defaults(run=cmd_export)

    s = sub.add_parser("alerts", parents=[common], help="alerts: `alerts test` sends a sample")
    s.add_argument("action", choices=("test",))
    s.add_argument("--target", action="append", metavar="NAME",
                   help="only this [alerts.targets.NAME] (repeatable; default: every one)")
    s.set_defaults(run=cmd_alerts)

    from ._gate import add_arguments as gate_arguments

    s = sub.add_parser("gate", parents=[common],
                       help="CI gate: fail when the success rate dropped or a new error appeared")
    gate_arguments(s)
    s.set_defaults(run=cmd_gate)

    s = sub.add_parser("mcp", parents=[common],
                       help="an MCP server on stdio for agents (needs learnkit[mcp])")
    s.add_argument("--allow-apply", action="store_true",
                   help="add a tool that applies threshold recommendations (default: read-only)")
    s.set_defaults(run=cmd_mcp)

    s = sub.add_parser("migrate", parents=[common],
                       help="move the SQLite history into a PostgreSQL store")
    s.add_argument("--to", required=True, metavar="URL",
                   help="postgresql://user@host:5432/db (password: storage.password_env, "
                        "PGPASSWORD or ~/.pgpass)")
    s.add_argument("--force", action="store_true",
                   help="copy a file already migrated into that store again")
    s.set_defaults(run=cmd_migrate)
    return p


def main(argv: list[str] | None = None, *, out: IO[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    out = out or sys.stdout
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("learnkit")
    logger.addHandler(handler)
    try:
        try:
            args = _parser().parse_args(argv)
        except SystemExit as exc:  # --help, --version
            return int(exc.code or 0)
        if args.command is None:
            _parser().print_help(out)
            return 2
        code: int = asyncio.run(args.run(args, out))
        return code
    except CliError as exc:
        print(f"learnkit: error: {exc}", file=sys.stderr)
        return exc.code
    except (LearnkitError, OSError, ValueError) as exc:
        print(f"learnkit: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        logger.removeHandler(handler)


def entrypoint() -> None:
    """The ``learnkit`` console script."""
    sys.exit(main())
