"""Import and export: every row and field round-trips, re-imports add nothing, interrupts
leave the database as it was."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import learnkit
from learnkit import track
from learnkit._cli import main

from .conftest import BASE_CONFIG, T0, Clock

ROOT = Path(__file__).resolve().parent.parent
TABLES = {
    "operations": "SELECT id, op_type, key, outcome, started_at, ended_at, duration, error_type,"
                  " error_message, context, parent_id, admission FROM operations ORDER BY id",
    "rollup_hourly": "SELECT * FROM rollup_hourly ORDER BY 1, 2, 3",
    "context_rollup": "SELECT * FROM context_rollup ORDER BY 1, 2, 3, 4, 5, 6",
    "error_rollup": "SELECT * FROM error_rollup ORDER BY 1, 2, 3, 4",
    "error_context_rollup": "SELECT * FROM error_context_rollup ORDER BY 1, 2, 3, 4, 5, 6",
}


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(argv), out=out)
    return code, out.getvalue()


def snapshot(db: Path) -> dict[str, list[Any]]:
    """Every row of the tables that hold outcomes, read with plain sqlite3."""
    conn = sqlite3.connect(db)
    try:
        return {t: conn.execute(q).fetchall() for t, q in TABLES.items()}
    finally:
        conn.close()


def project(tmp_path: Path, name: str) -> Path:
    d = tmp_path / name
    d.mkdir()
    (d / "learnkit.toml").write_text(BASE_CONFIG.replace("explore", "x_explore"))
    return d / "learnkit.toml"


async def varied(cfg: Path) -> None:
    """Nested operations, failures, explored work, awkward context values, an abandoned row."""
    clock = Clock()
    text = cfg.read_text().replace("confidence_threshold = 0.7",
                                   "confidence_threshold = 0.7\nexplore = 0.5")
    cfg.write_text(text)
    import random

    async with learnkit.open(cfg, clock=clock, random=random.Random(1)) as kit:
        for i in range(60):
            cx = i % 12 + 1
            if kit.admit("issue", complexity=cx):
                async with track("issue", key=f"issue-{i}", complexity=cx,
                                 label=["7", "", None, "naïve, \"quoted\"\nline", 2.5][i % 5],
                                 nested={"a": [1, 2]} if i % 7 == 0 else None) as op:
                    clock.advance(0.123456789)
                    async with track("run_tests", key=f"issue-{i}") as t:
                        clock.advance(1 / 3)
                        if cx > 8:
                            t.fail("TestFailure", f"{cx} unit tests failed, é")
                    if cx > 8:
                        op.fail("TestFailure")
            clock.advance(3600 / 7)
        kit.record("backfill", outcome="cancelled", started_at=T0 - 50, ended_at=T0 - 40)
    conn = sqlite3.connect(cfg.parent / "learnkit.db")
    with conn:  # a process that died mid-operation
        conn.execute("INSERT INTO operations (id, op_type, outcome, started_at, session_id)"
                     " VALUES (9999999, 'issue', 'abandoned', ?, 1)", (T0 + 10,))
        conn.execute("INSERT INTO rollup_hourly VALUES ('issue', ?, 'abandoned', 1, 0)",
                     (int((T0 + 10) // 3600),))
    conn.close()


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import asyncio

    cfg = project(tmp_path_factory.mktemp("src"), "src")
    asyncio.run(varied(cfg))
    return cfg


class TestRoundTrip:
    @pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
    def test_export_then_import_reproduces_every_row_and_field(
        self, source: Path, tmp_path: Path, fmt: str
    ) -> None:
        """ids, parent ids, exploration marks, contexts, abandoned rows, and the rollups."""
        before = snapshot(source.parent / "learnkit.db")
        ops = before["operations"]
        assert any(r[10] for r in ops) and any(r[11] for r in ops)  # parents, explored
        assert any(r[3] == "abandoned" for r in ops)
        dump = tmp_path / f"ops.{fmt}"
        code, out = run("--config", str(source), "export", "--output", str(dump))
        assert code == 0 and f"exported {len(ops):,} operation(s)" in out
        target = project(tmp_path, "dst")
        code, out = run("--config", str(target), "import", str(dump))
        assert code == 0, out
        assert snapshot(target.parent / "learnkit.db") == before

    def test_csv_cells_keep_their_types(self, source: Path, tmp_path: Path) -> None:
        """A string "7" stays a string, "" stays "", null stays null; absent stays absent."""
        dump = tmp_path / "ops.csv"
        run("--config", str(source), "export", "--output", str(dump))
        text = dump.read_text()
        assert ',"""7""",' in text or ',"7",' not in text
        header = text.splitlines()[0].split(",")
        assert header[:12] == ["id", "parent_id", "op_type", "outcome", "started_at",
                               "ended_at", "duration", "key", "error_type", "error_message",
                               "explore_probability", "context.complexity"]

    def test_import_counts_outcomes_in_the_summary_of_strings(self, tmp_path: Path) -> None:
        """A value that fails far more than the rest, first seen after the summary of
        strings is full, keeps its own rollup value after an import as it would when
        tracked: imported outcomes are counted too (issue 10: one bad value among
        many)."""
        dump = tmp_path / "ops.jsonl"
        with dump.open("w") as f:
            for i in range(3_000):
                repo = "repo-bad" if i >= 1_000 and i % 10 == 0 else f"repo-{i % 200}"
                failed = (i // 10) % 5 != 0 if repo == "repo-bad" else i % 10 == 3
                f.write(json.dumps({
                    "op_type": "fix", "outcome": "failure" if failed else "success",
                    "started_at": T0 + i, "context": {"repo": repo}}) + "\n")
        target = project(tmp_path, "dst")
        assert run("--config", str(target), "import", str(dump))[0] == 0
        conn = sqlite3.connect(target.parent / "learnkit.db")
        try:
            bad = conn.execute(
                "SELECT coalesce(sum(n), 0) FROM context_rollup WHERE attr = 'repo'"
                " AND value = '\"repo-bad\"' AND outcome = 'failure'").fetchone()[0]
        finally:
            conn.close()
        assert bad >= 150  # of its 160 failures, all but the first few

    def test_import_twice_adds_nothing_and_says_so(self, source: Path, tmp_path: Path) -> None:
        dump = tmp_path / "ops.jsonl"
        run("--config", str(source), "export", "--output", str(dump))
        n = len(dump.read_text().splitlines())
        target = project(tmp_path, "dst")
        assert run("--config", str(target), "import", str(dump))[0] == 0
        first = snapshot(target.parent / "learnkit.db")
        code, out = run("--config", str(target), "import", str(dump))
        assert code == 0
        assert f"imported 0 operation(s) from {dump}; {n:,} already in the database" in out
        assert snapshot(target.parent / "learnkit.db") == first

    def test_own_export_imported_back_adds_nothing(self, source: Path, tmp_path: Path) -> None:
        import shutil

        for f in source.parent.iterdir():
            shutil.copy(f, tmp_path / f.name)
        cfg = tmp_path / "learnkit.toml"
        before = snapshot(tmp_path / "learnkit.db")
        dump = tmp_path / "ops.csv"
        run("--config", str(cfg), "export", "--output", str(dump))
        code, out = run("--config", str(cfg), "import", str(dump))
        assert code == 0 and "imported 0 operation(s)" in out, out
        assert snapshot(tmp_path / "learnkit.db") == before

    def test_into_a_database_with_operations_ids_are_new_and_parents_follow(
        self, source: Path, tmp_path: Path
    ) -> None:
        dump = tmp_path / "ops.jsonl"
        run("--config", str(source), "export", "--output", str(dump))
        target = project(tmp_path, "dst")
        lines = dump.read_text().splitlines()
        (tmp_path / "own.jsonl").write_text(
            '{"op_type": "mine", "outcome": "success", "started_at": 1700000000}\n')
        assert run("--config", str(target), "import", str(tmp_path / "own.jsonl"))[0] == 0
        code, out = run("--config", str(target), "import", str(dump))
        assert code == 0 and f"imported {len(lines):,}" in out
        src = snapshot(source.parent / "learnkit.db")["operations"]
        dst = snapshot(target.parent / "learnkit.db")["operations"][1:]
        assert len(dst) == len(src)
        new_id = {s[0]: d[0] for s, d in zip(src, dst, strict=True)}
        assert all(d[1:10] == s[1:10] and d[11] == s[11] for s, d in zip(src, dst, strict=True))
        assert [d[10] for d in dst] == [new_id.get(s[10]) for s in src]
        assert set(new_id) != set(new_id.values())


def writing(db: Path) -> bool:
    """True while another connection holds the database's write lock."""
    conn = sqlite3.connect(db, timeout=0)
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError:
        return True
    finally:
        conn.close()
    return False


def write_big(path: Path, n: int) -> None:
    with path.open("w") as f:
        for i in range(n):
            f.write(json.dumps({"op_type": "bulk", "outcome": "failure" if i % 5 else "success",
                                "started_at": 1_700_000_000 + i, "error_type": "E",
                                "error_message": f"row {i} failed",
                                "context": {"complexity": i % 12}}) + "\n")


class TestInterrupted:
    @pytest.mark.slow
    @pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
    def test_killed_import_leaves_the_database_as_before(
        self, source: Path, tmp_path: Path, sig: signal.Signals
    ) -> None:
        """A real `learnkit import` process killed mid-way: not one row or count changes."""
        import shutil

        for f in source.parent.iterdir():
            shutil.copy(f, tmp_path / f.name)
        db = tmp_path / "learnkit.db"
        before = snapshot(db)
        big = tmp_path / "big.jsonl"
        write_big(big, 200_000)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen(
            [sys.executable, "-m", "learnkit", "--config", str(tmp_path / "learnkit.toml"),
             "import", str(big)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if writing(db):  # the import's transaction holds the write lock
                break
            time.sleep(0.01)
        time.sleep(1.0)  # well into it: thousands of rows written in the transaction
        assert proc.poll() is None, "the import finished before it could be interrupted"
        assert writing(db)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
        if sig == signal.SIGINT:
            assert proc.returncode == 130, err
            assert "interrupted: nothing was imported" in err
            assert "Traceback" not in err
        else:
            assert proc.returncode == -signal.SIGKILL
        assert snapshot(db) == before
        if sig == signal.SIGKILL:  # and it can simply be run again
            code, out = run("--config", str(tmp_path / "learnkit.toml"), "import", str(big))
            assert code == 0 and "imported 200,000 operation(s)" in out


class TestInvalid:
    def test_bad_line_at_the_end_imports_nothing_into_an_existing_database(
        self, source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        import shutil

        for f in source.parent.iterdir():
            shutil.copy(f, tmp_path / f.name)
        before = snapshot(tmp_path / "learnkit.db")
        big = tmp_path / "big.jsonl"
        write_big(big, 5000)
        with big.open("a") as f:
            f.write('{"op_type": "bulk", "outcome": "sucess", "started_at": 1}\n')
        code, _ = run("--config", str(tmp_path / "learnkit.toml"), "import", str(big))
        assert code == 1
        err = capsys.readouterr().err
        assert f"{big}:5001: outcome 'sucess'" in err and "nothing was imported" in err
        assert snapshot(tmp_path / "learnkit.db") == before


# -- validation and parsing, line by line (ported from the earlier parse_file tests) --------

T = 1_790_000_000.0  # 2026-09-21T14:13:20Z
ISO = "2026-09-21T14:13:20Z"


def fields(rec: Any) -> dict[str, Any]:
    """An ImportRecord's set fields, without its hash."""
    return {k: v for k, v in rec._asdict().items() if v is not None and k != "digest"}


def parse(path: Path, fmt: str | None = None) -> tuple[list[dict[str, Any]], list[Any]]:
    from learnkit._transfer import Problems, Source, read_records

    problems = Problems()
    good = [fields(r) for r in read_records(Source(path, fmt), problems, skip_invalid=True)]
    return good, problems.first


class TestValidate:
    def test_minimal(self) -> None:
        from learnkit._transfer import validate

        assert fields(validate({"op_type": "a", "outcome": "success", "started_at": T})) == {
            "op_type": "a", "outcome": "success", "started_at": T, "ended_at": T,
            "duration": 0.0}

    def test_every_field(self) -> None:
        from learnkit._transfer import validate

        got = validate({"id": 3, "parent_id": "2", "op_type": "a", "outcome": "failure",
                        "started_at": ISO, "ended_at": "1790000005", "key": 42,
                        "error_type": "E", "error_message": "boom", "duration": "1.5",
                        "explore_probability": 0.05, "context": {"complexity": 7}})
        assert fields(got) == {"id": 3, "parent_id": 2, "op_type": "a", "outcome": "failure",
                               "started_at": T, "ended_at": T + 5, "key": "42",
                               "error_type": "E", "error_message": "boom", "duration": 1.5,
                               "admission": 0.05, "context": {"complexity": 7}}

    @pytest.mark.parametrize(("text", "want"), [
        ("2026-09-21T14:13:20Z", T), ("2026-09-21T14:13:20+00:00", T),
        ("2026-09-21T16:13:20+02:00", T), ("2026-09-21T14:13:20", T),  # no zone: UTC
        ("1790000000", T), (" 1790000000.5 ", T + 0.5),
    ])
    def test_times(self, text: str, want: float) -> None:
        from learnkit._transfer import validate

        assert validate({"op_type": "a", "outcome": "success", "started_at": text}
                        ).started_at == want

    def test_same_record_same_hash_whatever_the_spelling(self) -> None:
        from learnkit._transfer import validate

        a = validate({"op_type": "a", "outcome": "success", "started_at": T,
                      "context": {"x": 1, "y": "z"}})
        b = validate({"context": {"y": "z", "x": 1}, "started_at": ISO, "outcome": "success",
                      "op_type": "a", "ended_at": str(T)})
        c = validate({"op_type": "a", "outcome": "success", "started_at": T,
                      "context": {"x": 2, "y": "z"}})
        assert a.digest == b.digest != c.digest

    @pytest.mark.parametrize(("record", "message"), [
        ({"outcome": "success", "started_at": T}, "op_type is required"),
        ({"op_type": "", "outcome": "success", "started_at": T}, "op_type is required"),
        ({"op_type": "a", "outcome": "running", "started_at": T}, "outcome 'running' is not"),
        ({"op_type": "a", "outcome": "success"}, "started_at is required"),
        ({"op_type": "a", "outcome": "success", "started_at": True}, "started_at must be"),
        ({"op_type": "a", "outcome": "success", "started_at": "yesterday"},
         "neither Unix seconds nor an ISO 8601 time"),
        ({"op_type": "a", "outcome": "success", "started_at": "nan"}, "must be finite"),
        ({"op_type": "a", "outcome": "success", "started_at": T, "ended_at": T - 1},
         "is before started_at"),
        ({"op_type": "a", "outcome": "success", "started_at": T, "duration": "fast"},
         "duration must be a number"),
        ({"op_type": "a", "outcome": "success", "started_at": T, "duration": -1},
         "finite number in"),
        ({"op_type": "a", "outcome": "success", "started_at": T, "context": [1]},
         "context must be an object"),
        ({"op_type": "a", "outcome": "success", "started_at": T, "colour": "red"},
         "unknown field 'colour'"),
        ({"op_type": "a", "outcome": "success", "started_at": T, "id": 0}, "id must be"),
        ({"op_type": "a", "outcome": "abandoned", "started_at": T, "ended_at": T},
         "has no ended_at"),
    ])
    def test_rejects(self, record: dict[str, Any], message: str) -> None:
        from learnkit._transfer import validate

        with pytest.raises(ValueError, match=message.replace("(", r"\(")):
            validate(record)


class TestHostileLines:
    def test_every_hostile_jsonl_line_is_a_problem_with_its_number(self, tmp_path: Path) -> None:
        """Lines that raised out of the reader (and past --skip-invalid) are reported
        one by one; the good lines around them still import."""
        good = json.dumps({"op_type": "a", "outcome": "success", "started_at": T})
        f = tmp_path / "ops.jsonl"
        f.write_bytes(b"\n".join([
            b"\xef\xbb\xbf" + good.encode(),  # a byte order mark before line 1
            json.dumps({"op_type": "a", "outcome": ["failure"], "started_at": T}).encode(),
            b'{"op_type": "a", "outcome": "success", "started_at": ' + b"9" * 5000 + b"}",
            b'{"op_type": "a", "outcome": "success", "context": ' + b"[" * 100_000 + b"}",
            b'{"op_type": "a", "outcome": "success", "started_at": 1790000000, "key": "caf\xe9"}',
            json.dumps({"op_type": "a", "outcome": "success", "started_at": -5}).encode(),
            json.dumps({"op_type": "a", "outcome": "success", "started_at": 1e15}).encode(),
            json.dumps({"op_type": "a", "outcome": "success", "started_at": T,
                        "ended_at": "9999-12-31T23:59:59Z"}).encode(),
            good.encode(),
        ]) + b"\n")
        ok, bad = parse(f)
        assert len(ok) == 3
        assert [p.line for p in bad] == [2, 3, 4, 5, 6, 7]
        assert "outcome" in bad[0].message
        assert "not valid UTF-8" in bad[3].message
        assert all("1970-01-01" in p.message for p in bad[4:])

    def test_a_csv_cell_over_the_csv_limit_is_a_problem(self, tmp_path: Path) -> None:
        f = tmp_path / "ops.csv"
        f.write_text("op_type,outcome,started_at,key\n"
                     f"a,success,{T},k1\n"
                     f'a,success,{T},"{"x" * 200_000}"\n'
                     f"a,success,{T},k3\n")
        ok, bad = parse(f)
        assert [r["key"] for r in ok] == ["k1", "k3"]
        assert [p.line for p in bad] == [3] and "not valid CSV" in bad[0].message

    def test_a_clock_stepping_back_still_exports_what_imports(self, tmp_path: Path) -> None:
        """Tracking under a clock that steps back (NTP) stored rows ending before they
        began, which the import then refused: export then import lost them."""
        t = [T]

        def clock() -> float:
            t[0] -= 5.0
            return t[0]

        cfg = project(tmp_path, "src")

        async def work() -> None:
            async with learnkit.open(cfg, clock=clock):
                for _ in range(3):
                    async with track("op"):
                        pass

        asyncio.run(work())
        stored = sql_rows(cfg.parent / "learnkit.db")
        assert all(r[1] >= r[0] for r in stored)
        dump = tmp_path / "ops.jsonl"
        assert run("--config", str(cfg), "export", "--output", str(dump))[0] == 0
        target = project(tmp_path, "dst")
        code, out = run("--config", str(target), "import", str(dump))
        assert code == 0 and "imported 3 operation(s)" in out, out


class TestCsvFormulas:
    @given(st.text())
    def test_defusing_is_undone_exactly(self, text: str) -> None:
        from learnkit._transfer import _FORMULA, _defused, _restored

        cell = _defused(text)
        assert _restored(cell) == text
        assert not re.match(r"[=+\-@\t\r]", cell)
        assert cell == text or (cell == "'" + text and _FORMULA.match(text))

    def test_exported_text_never_starts_a_formula_and_imports_back(
        self, tmp_path: Path
    ) -> None:
        """Values written by the observed code (a message, a key, a context value) that
        a spreadsheet would run: exported with a leading quote, imported as they were."""
        evil = ['=HYPERLINK("http://evil","x")', "+cmd|' /C calc'!A0", "-2+3", "@SUM(A1)",
                "'=already quoted"]
        cfg = project(tmp_path, "src")

        async def work() -> None:
            async with learnkit.open(cfg) as kit:
                for i, v in enumerate(evil):
                    kit.record(v, outcome="failure", started_at=T + i, key=v,
                               error_type=v, error_message=v, context={"note": v})

        asyncio.run(work())
        dump = tmp_path / "ops.csv"
        assert run("--config", str(cfg), "export", "--output", str(dump))[0] == 0
        with dump.open(newline="") as f:
            cells = [c for row in csv.reader(f) for c in row]
        assert not [c for c in cells if re.match(r"[=+\-@\t\r]", c)]
        target = project(tmp_path, "dst")
        assert run("--config", str(target), "import", str(dump))[0] == 0
        conn = sqlite3.connect(target.parent / "learnkit.db")
        try:
            back = conn.execute("SELECT op_type, key, error_type, error_message, context"
                                " FROM operations ORDER BY started_at").fetchall()
        finally:
            conn.close()
        assert back == [(v, v, v, v, json.dumps({"note": v}, separators=(",", ":")))
                        for v in evil]


def sql_rows(db: Path) -> list[tuple[float, float]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT started_at, ended_at FROM operations").fetchall()
    finally:
        conn.close()


class TestParse:
    def test_jsonl_good_and_bad_lines(self, tmp_path: Path) -> None:
        f = tmp_path / "ops.jsonl"
        f.write_text("\n".join([
            json.dumps({"op_type": "a", "outcome": "success", "started_at": ISO,
                        "context": {"lang": "go"}}),
            "",  # blank lines are skipped, but still counted
            "{not json",
            "[1, 2]",
            json.dumps({"op_type": "a", "outcome": "maybe", "started_at": T}),
        ]) + "\n")
        good, bad = parse(f)
        assert good == [{"op_type": "a", "outcome": "success", "started_at": T, "ended_at": T,
                         "duration": 0.0, "context": {"lang": "go"}}]
        assert [p.line for p in bad] == [3, 4, 5]
        assert bad[0].message.startswith("not valid JSON")
        assert bad[1].message == "each line must be a JSON object"
        assert "outcome 'maybe'" in bad[2].message

    def test_csv_good_and_bad_lines(self, tmp_path: Path) -> None:
        f = tmp_path / "ops.csv"
        f.write_text(
            "op_type,outcome,started_at,duration,context.complexity,context.lang,context.ok\n"
            "a,success,2026-09-21T14:13:20Z,1.5,7,go,true\n"
            "a,success,1790000000,,3,go,true,extra\n"
            "a,success,not a time,,,,\n"
            'b,skipped,1790000000,,2.5,"say ""hi""",null\n'
        )
        good, bad = parse(f)
        assert [g["context"] for g in good] == [
            {"complexity": 7, "lang": "go", "ok": True},
            {"complexity": 2.5, "lang": 'say "hi"', "ok": None}]
        assert [(p.line, p.message[:20]) for p in bad] == [
            (3, "more cells than the "), (4, "started_at 'not a ti")]

    def test_context_column_as_json_and_unknown_column(self, tmp_path: Path) -> None:
        f = tmp_path / "ops.csv"
        f.write_text('op_type,outcome,started_at,context\n'
                     'a,success,1790000000,"{""complexity"": 4}"\n'
                     'a,success,1790000000,{oops\n')
        good, bad = parse(f)
        assert [g["context"] for g in good] == [{"complexity": 4}]
        assert [(p.line, p.message) for p in bad] == [
            (3, "the context column must hold a JSON object")]
        g = tmp_path / "ops.data"
        g.write_text("op_type,outcome,started_at,colour\na,success,1790000000,red\n")
        good, bad = parse(g, "csv")
        assert good == [] and "unknown field 'colour'" in bad[0].message

    def test_empty_files(self, tmp_path: Path) -> None:
        (tmp_path / "a.jsonl").write_text("")
        (tmp_path / "b.csv").write_text("op_type,outcome,started_at\n")
        assert parse(tmp_path / "a.jsonl") == ([], [])
        assert parse(tmp_path / "b.csv") == ([], [])
