"""The command line: every command through main([...]), and every bad input."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from learnkit._cli import main

from .conftest import BASE_CONFIG

ROOT = Path(__file__).resolve().parent.parent


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(argv), out=out)
    return code, out.getvalue()


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("demo")
    code, out = run("demo", str(d))
    assert code == 0, out
    return d


@pytest.fixture
def demo(demo_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the demo's config and database; returns the config path."""
    for f in demo_dir.iterdir():
        if f.name.startswith("learnkit"):
            shutil.copy(f, tmp_path / f.name)
    return tmp_path / "learnkit.toml"


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("learnkit: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


class TestDemo:
    def test_demo_refuses_a_folder_with_a_users_config_and_database(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A user's learnkit.toml and learnkit.db are left byte for byte; --force replaces them."""
        cfg = tmp_path / "learnkit.toml"
        cfg.write_text("# mine\n" + BASE_CONFIG)
        db = tmp_path / "learnkit.db"
        db.write_bytes(b"my data")
        before = cfg.read_bytes()
        code, _ = run("demo", str(tmp_path))
        assert code == 1
        assert "--force" in one_error_line(capsys)
        assert cfg.read_bytes() == before and db.read_bytes() == b"my data"
        cfg.unlink()  # a database alone is refused too
        code, _ = run("demo", str(tmp_path))
        assert code == 1 and "learnkit.db" in one_error_line(capsys)
        assert db.read_bytes() == b"my data"

    def test_demo_reruns_in_its_own_folder_and_force_replaces(self, tmp_path: Path) -> None:
        from learnkit.demo import MARKER, check_folder

        (tmp_path / "learnkit.toml").write_text(MARKER + "\n[learning]\n")
        (tmp_path / "learnkit.db").write_bytes(b"demo data")
        check_folder(tmp_path)  # the demo's own files: no refusal
        (tmp_path / "learnkit.toml").write_text("[learning]\n")
        with pytest.raises(FileExistsError):
            check_folder(tmp_path)
        check_folder(tmp_path, force=True)

    def test_demo_creates_config_db_and_shows_table_and_dashboard(self, demo_dir: Path) -> None:
        """The first command a user runs: config, database, weekly table and dashboard."""
        assert (demo_dir / "learnkit.toml").is_file() and (demo_dir / "learnkit.db").is_file()
        code, out = run("--config", str(demo_dir / "learnkit.toml"), "thresholds", "history")
        assert code == 0 and "max_complexity 8 -> 7" in out

    def test_demo_output(self, tmp_path: Path) -> None:
        """The demo prints the four-week table, then the dashboard."""
        code, out = run("demo", str(tmp_path / "d"), "--seed", "3")
        assert code == 0
        assert "| Week 1 |" in out and "| Week 4 |" in out
        assert "learnkit dashboard" in out and "Thresholds" in out
        import re  # the table's weeks are the dashboard's weeks, with the same figures

        table = re.findall(r"\| Week (\d) \| ([\d.]+%) \|.*\((\d+) of", out)
        board = re.findall(r"  week (\d) \(.*\)  ([\d.]+%)  n=(\d+)", out)
        assert len(table) == 4 and table == board


class TestDashboard:
    def test_piped_dashboard_is_plain_and_complete(self, demo: Path) -> None:
        """Piped output is plain text with every section, no escape codes."""
        code, out = run("--config", str(demo), "dashboard")
        assert code == 0
        for section in ("Success rate", "Weekly trend", "By operation type", "Outcomes",
                        "Top failure patterns", "Error clusters", "Recommendations",
                        "Thresholds"):
            assert section in out
        assert "\x1b[" not in out
        assert "process_issue" in out and "max_complexity = " in out

    def test_watch_refreshes(self, demo: Path) -> None:
        """--watch redraws every SECONDS (stopped after two rounds here)."""
        code, out = run("dashboard", "--config", str(demo), "--watch", "0.01", "--times", "2")
        assert code == 0 and out.count("learnkit dashboard") == 2


class TestReport:
    def test_markdown_report(self, demo: Path, tmp_path: Path) -> None:
        """report --output writes Markdown with summary, trend, patterns, thresholds."""
        target = tmp_path / "report.md"
        code, out = run("--config", str(demo), "report", "--days", "30", "--output", str(target))
        assert code == 0 and f"wrote {target}" in out
        text = target.read_text()
        for heading in ("# learnkit report: last 30 days", "## Summary", "## Weekly trend",
                        "## Failure patterns", "## Recommendations", "## Thresholds",
                        "### History"):
            assert heading in text
        assert "## By operation type" not in text

    def test_detailed_report(self, demo: Path) -> None:
        """--detailed adds per-type and per-cluster sections with example messages."""
        code, out = run("--config", str(demo), "report", "--days", "30", "--detailed")
        assert code == 0
        assert "## By operation type" in out and "### process_issue" in out
        assert "## Error clusters in detail" in out and "- example: `" in out
        assert "unit tests failed for issue #" in out

    def test_html_report_is_self_contained(self, demo: Path, tmp_path: Path) -> None:
        """--format html: one page with inline SVG charts and nothing fetched."""
        target = tmp_path / "report.html"
        code, _ = run("--config", str(demo), "report", "--days", "30", "--output", str(target))
        assert code == 0
        page = target.read_text()
        assert page.startswith("<!DOCTYPE html>") and page.count("<svg") == 4
        for label in ("success rate", "coverage (attempted / offered)", "Utility per offered",
                      "95% interval", "max_complexity 8\u21927", "100%", "n="):
            assert label in page
        assert "<table>" in page
        without_ns = page.replace('xmlns="http://www.w3.org/2000/svg"', "")
        assert "http://" not in without_ns and "https://" not in without_ns
        assert "<script" not in page


class TestOutputFiles:
    @pytest.mark.parametrize("command", ["report", "export"])
    def test_an_existing_file_is_kept_unless_forced(
        self, demo: Path, tmp_path: Path, command: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        mine = tmp_path / "mine.txt"
        mine.write_text("my notes\n")
        code, _ = run("--config", str(demo), command, "--output", str(mine))
        assert code == 2
        assert "already exists; pass --force" in one_error_line(capsys)
        assert mine.read_text() == "my notes\n"
        code, _ = run("--config", str(demo), command, "--output", str(mine), "--force")
        assert code == 0 and mine.read_text() != "my notes\n"

    @pytest.mark.parametrize("command", ["report", "export"])
    @pytest.mark.parametrize("own", ["learnkit.db", "learnkit.toml", "learnkit.db-wal"])
    def test_learnkits_own_files_are_never_an_output(
        self, demo: Path, command: str, own: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Not even with --force: the history and the config stay byte for byte."""
        db, cfg = demo.parent / "learnkit.db", demo
        before = db.read_bytes(), cfg.read_bytes()
        code, _ = run("--config", str(demo), command, "--output", str(demo.parent / own),
                      "--force")
        assert code == 2
        assert "learnkit's own" in one_error_line(capsys)
        assert (db.read_bytes(), cfg.read_bytes()) == before

    def test_a_link_is_replaced_not_written_through(self, demo: Path, tmp_path: Path) -> None:
        mine = tmp_path / "mine.md"
        mine.write_text("my notes\n")
        link = tmp_path / "link.md"
        link.symlink_to(mine)
        assert run("--config", str(demo), "report", "--output", str(link), "--force")[0] == 0
        assert mine.read_text() == "my notes\n"
        assert not link.is_symlink() and "learnkit" in link.read_text().lower()


class TestInsights:
    def test_json_is_stable(self, demo: Path) -> None:
        """--json emits the documented, versioned form."""
        code, out = run("--config", str(demo), "insights", "--days", "30", "--json")
        assert code == 0
        data = json.loads(out)
        assert data["version"] == 1
        assert set(data) == {"version", "window", "success_rate", "sample_size",
                             "outcome_counts", "rates_by_type", "failure_patterns",
                             "error_clusters", "recommendations", "actions",
                             "recommended_thresholds", "tests"}
        assert data["sample_size"] > 0 and 0 < data["success_rate"] < 1
        assert {"kind", "description", "confidence", "q_value"} <= set(data["failure_patterns"][0])

    def test_text(self, demo: Path) -> None:
        """Without --json: a readable summary."""
        code, out = run("--config", str(demo), "insights")
        assert code == 0 and "success rate" in out and "recommendations:" in out


class TestThresholds:
    def test_show_history_apply_rollback(self, demo: Path) -> None:
        """show lists values; apply and rollback change the file; history records both."""
        code, out = run("--config", str(demo), "thresholds")
        assert code == 0 and out.startswith("max_complexity = ")
        assert out.startswith("max_complexity = 6 ")
        # The demo's loop analysed these same weeks every simulated day with
        # auto_apply on and stopped at 6, the first band above break-even
        # (complexity 7 succeeds 30%, 6 succeeds 65%): apply finds nothing.
        code, out = run("--config", str(demo), "thresholds", "apply")
        assert code == 0
        assert out.startswith("nothing applied: no threshold recommendation at confidence >= 0.7")
        assert not any(line.startswith("applied:") for line in out.splitlines())
        assert 'value = 6\n' in demo.read_text()
        code, out = run("--config", str(demo), "thresholds", "rollback", "max_complexity")
        assert code == 0 and "rolled back:" in out
        assert 'value = 7\n' in demo.read_text()
        code, out = run("--config", str(demo), "thresholds", "history")
        assert code == 0 and "rollback" in out

    def test_unknown_threshold(self, demo: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """An unknown name: one line naming it and the defined ones."""
        code, _ = run("--config", str(demo), "thresholds", "rollback", "max_complexty")
        assert code == 1
        line = one_error_line(capsys)
        assert "max_complexty" in line and "max_complexity" in line


class TestImportExport:
    def test_roundtrip_jsonl_and_csv(self, demo: Path, tmp_path: Path) -> None:
        """export then import reproduces the counts, in both formats."""
        for fmt in ("jsonl", "csv"):
            dump = tmp_path / f"ops.{fmt}"
            code, _ = run("--config", str(demo), "export", "--output", str(dump))
            assert code == 0
            fresh = tmp_path / fmt
            fresh.mkdir()
            (fresh / "learnkit.toml").write_text(BASE_CONFIG)
            code, out = run("--config", str(fresh / "learnkit.toml"), "import", str(dump))
            assert code == 0, out
            n = sum(1 for line in dump.read_text().splitlines() if line.strip())
            assert f"imported {n - (fmt == 'csv'):,} operation(s)" in out
            _, a = run("--config", str(demo), "insights", "--days", "60", "--json")
            _, b = run("--config", str(fresh / "learnkit.toml"), "insights", "--days", "60",
                       "--json")
            assert json.loads(a)["outcome_counts"] == json.loads(b)["outcome_counts"]

    def test_malformed_line_imports_nothing(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Bad lines are listed with their numbers and why; nothing is written."""
        (tmp_path / "learnkit.toml").write_text(BASE_CONFIG)
        f = tmp_path / "past.jsonl"
        f.write_text(
            '{"op_type": "x", "outcome": "success", "started_at": 1700000000}\n'
            '{"op_type": "x", "outcome": "sucess", "started_at": 1700000000}\n'
            "not json\n"
            '{"op_type": "x", "outcome": "failure", "started_at": "yesterday"}\n'
        )
        code, _ = run("--config", str(tmp_path / "learnkit.toml"), "import", str(f))
        err = capsys.readouterr().err
        assert code == 1 and "Traceback" not in err
        assert f"{f}:2: outcome 'sucess' is not one of" in err
        assert f"{f}:3: not valid JSON" in err
        assert f"{f}:4: started_at 'yesterday'" in err
        assert "3 invalid line(s)" in err and "nothing was imported" in err
        assert not (tmp_path / "learnkit.db").exists()

    def test_skip_invalid(self, tmp_path: Path) -> None:
        """--skip-invalid imports the rest and says exactly what it skipped."""
        (tmp_path / "learnkit.toml").write_text(BASE_CONFIG)
        f = tmp_path / "past.csv"
        f.write_text("op_type,outcome,started_at,ended_at,context.complexity\n"
                     "x,success,2026-11-01T10:00:00Z,2026-11-01T10:05:00Z,3\n"
                     "x,boom,2026-11-01T10:00:00Z,,4\n")
        code, out = run("--config", str(tmp_path / "learnkit.toml"), "import", str(f),
                        "--skip-invalid")
        assert code == 0
        assert "imported 1 operation(s)" in out and "skipped line 3: outcome 'boom'" in out


class TestBadInput:
    def test_missing_config(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """No config: the line says which file and how to make one."""
        code, _ = run("--config", str(tmp_path / "nope.toml"), "dashboard")
        assert code == 1
        line = one_error_line(capsys)
        assert "nope.toml" in line and "learnkit init" in line

    def test_config_with_errors(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A bad config: path, line, key and what is valid."""
        p = tmp_path / "learnkit.toml"
        p.write_text(BASE_CONFIG.replace("min_samples = 10", "min_samples = 'ten'"))
        code, _ = run("--config", str(p), "insights")
        assert code == 1
        assert "learnkit.toml:3: learning.min_samples: expected an integer" in (
            one_error_line(capsys))

    @pytest.mark.parametrize("with_db", [False, True])
    def test_empty_database(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], with_db: bool
    ) -> None:
        """No database, or one with no operations: say so and how to get data."""
        p = tmp_path / "learnkit.toml"
        p.write_text(BASE_CONFIG)
        if with_db:
            run("--config", str(p), "thresholds")  # creates an empty database
        code, _ = run("--config", str(p), "report")
        assert code == 1
        line = one_error_line(capsys)
        assert ("no operations yet" if with_db else "no database at") in line
        assert "learnkit import" in line

    def test_unwritable_output(
        self, demo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """An output path that cannot be written: named, with the fix."""
        code, _ = run("--config", str(demo), "report", "--output",
                      str(tmp_path / "no" / "such" / "dir" / "r.md"))
        assert code == 1
        line = one_error_line(capsys)
        assert "cannot write" in line and "--output" in line

    @pytest.mark.parametrize("argv", [["dashboard", "--days", "-3"], ["report", "--days", "x"],
                                      ["frobnicate"], ["thresholds", "rollback"]])
    def test_bad_arguments(self, argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
        """Bad arguments: one line and exit code 2."""
        code, _ = run(*argv)
        assert code == 2
        one_error_line(capsys)

    @pytest.mark.parametrize("command", ["dashboard", "report", "insights", "export"])
    def test_days_beyond_ten_years_are_refused_at_once(
        self, demo: Path, command: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """--days 100000000 filled memory building one window a day (3 GB in 40 s)."""
        code, _ = run("--config", str(demo), command, "--days", "100000000")
        assert code == 2
        assert "at most 3660" in one_error_line(capsys)


class TestInit:
    def test_init_then_refuses_to_overwrite(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """init writes a valid starter config and will not clobber one."""
        p = tmp_path / "learnkit.toml"
        assert run("init", str(p))[0] == 0
        import learnkit

        assert learnkit.load_config(p).thresholds["max_complexity"].value == 8
        assert run("init", str(p))[0] == 1
        assert "already exists" in one_error_line(capsys)


def test_python_dash_m(tmp_path: Path) -> None:
    """`python -m learnkit` is the same command, as a real process."""
    proc = subprocess.run([sys.executable, "-m", "learnkit", "--version"],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 0 and proc.stdout.startswith("learnkit ")
    proc = subprocess.run([sys.executable, "-m", "learnkit", "--config",
                           str(tmp_path / "x.toml"), "dashboard"],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("learnkit: error:")


def test_rich_dashboard_takes_data_as_text(tmp_path: Path) -> None:
    """On a terminal, recorded text with brackets is shown as is, never parsed as markup."""
    import asyncio

    from rich.console import Console

    import learnkit
    from learnkit._views.render import collect, dashboard_rich

    p = tmp_path / "learnkit.toml"
    p.write_text(BASE_CONFIG)

    async def go() -> str:
        async with learnkit.open(p) as kit:
            for i in range(30):
                kit.record("ssh[/x]", outcome="failure", started_at=kit.now() - 100 - i,
                           error_type="AuthError", error_message=f"user u{i} [preauth] [/bold]")
            await kit.flush()
            snap = await collect(kit, 7)
        console = Console(file=io.StringIO(), width=200, force_terminal=True)
        dashboard_rich(snap, console)
        return console.file.getvalue()  # type: ignore[attr-defined,no-any-return]

    text = asyncio.run(go())
    assert "[preauth]" in text and "ssh[/x]" in text
