"""Import and export: validate, parse_file (JSON Lines, CSV) and export_rows."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest

from learnkit._transfer import FIELDS, Problem, export_rows, parse_file, validate

T = 1_790_000_000.0  # 2026-09-21T14:13:20Z
ISO = "2026-09-21T14:13:20Z"


class TestValidate:
    def test_minimal(self) -> None:
        assert validate({"op_type": "a", "outcome": "success", "started_at": T}) == {
            "op_type": "a", "outcome": "success", "started_at": T, "ended_at": T}

    def test_every_field(self) -> None:
        got = validate({"op_type": "a", "outcome": "failure", "started_at": ISO,
                        "ended_at": "1790000005", "key": 42, "error_type": "E",
                        "error_message": "boom", "duration": "1.5",
                        "context": {"complexity": 7}})
        assert got == {"op_type": "a", "outcome": "failure", "started_at": T,
                       "ended_at": T + 5, "key": "42", "error_type": "E",
                       "error_message": "boom", "duration": 1.5, "context": {"complexity": 7}}

    @pytest.mark.parametrize(("text", "want"), [
        ("2026-09-21T14:13:20Z", T), ("2026-09-21T14:13:20+00:00", T),
        ("2026-09-21T16:13:20+02:00", T), ("2026-09-21T14:13:20", T),  # no zone: UTC
        ("1790000000", T), (" 1790000000.5 ", T + 0.5),
    ])
    def test_times(self, text: str, want: float) -> None:
        assert validate({"op_type": "a", "outcome": "success", "started_at": text})[
            "started_at"] == want

    def test_empty_optional_fields_are_left_out(self) -> None:
        got = validate({"op_type": "a", "outcome": "success", "started_at": T, "ended_at": "",
                        "key": "", "error_type": None, "duration": "", "context": ""})
        assert set(got) == {"op_type", "outcome", "started_at", "ended_at"}

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
         "duration must be seconds"),
        ({"op_type": "a", "outcome": "success", "started_at": T, "duration": -1},
         "finite, non-negative"),
        ({"op_type": "a", "outcome": "success", "started_at": T, "context": [1]},
         "context must be an object"),
        ({"op_type": "a", "outcome": "success", "started_at": T, "colour": "red"},
         "unknown field 'colour'"),
    ])
    def test_rejects(self, record: dict[str, Any], message: str) -> None:
        with pytest.raises(ValueError, match=message.replace("(", r"\(")):
            validate(record)


class TestParseJsonl:
    def test_good_and_bad_lines(self, tmp_path: Path) -> None:
        f = tmp_path / "ops.jsonl"
        f.write_text("\n".join([
            json.dumps({"op_type": "a", "outcome": "success", "started_at": ISO,
                        "context": {"lang": "go"}}),
            "",  # blank lines are skipped, but still counted
            "{not json",
            "[1, 2]",
            json.dumps({"op_type": "a", "outcome": "maybe", "started_at": T}),
            json.dumps({"op_type": "b", "outcome": "failure", "started_at": T,
                        "error_type": "E", "error_message": "boom"}),
        ]) + "\n")
        good, bad = parse_file(f)
        assert good == [
            (1, {"op_type": "a", "outcome": "success", "started_at": T, "ended_at": T,
                 "context": {"lang": "go"}}),
            (6, {"op_type": "b", "outcome": "failure", "started_at": T, "ended_at": T,
                 "error_type": "E", "error_message": "boom"}),
        ]
        assert [p.line for p in bad] == [3, 4, 5]
        assert bad[0].message.startswith("not valid JSON")
        assert bad[1] == Problem(4, "each line must be a JSON object")
        assert "outcome 'maybe'" in bad[2].message

    def test_format_by_suffix_or_argument(self, tmp_path: Path) -> None:
        f = tmp_path / "ops.txt"
        f.write_text(json.dumps({"op_type": "a", "outcome": "success", "started_at": T}) + "\n")
        assert len(parse_file(f)[0]) == 1  # anything but .csv is JSON Lines
        g = tmp_path / "ops.data"
        g.write_text("op_type,outcome,started_at\na,success,1790000000\n")
        good, bad = parse_file(g, "csv")
        assert bad == [] and good[0][1]["op_type"] == "a"

    def test_empty_file(self, tmp_path: Path) -> None:
        f = tmp_path / "ops.jsonl"
        f.write_text("")
        assert parse_file(f) == ([], [])


class TestParseCsv:
    def test_good_and_bad_lines(self, tmp_path: Path) -> None:
        f = tmp_path / "ops.csv"
        f.write_text(
            "op_type,outcome,started_at,duration,context.complexity,context.lang,context.ok\n"
            "a,success,2026-09-21T14:13:20Z,1.5,7,go,true\n"
            "a,failure,1790000000,,,,\n"
            "a,success,1790000000,,3,go,true,extra\n"
            "a,success,not a time,,,,\n"
            'b,skipped,1790000000,,2.5,"say ""hi""",null\n'
        )
        good, bad = parse_file(f)
        assert good == [
            (2, {"op_type": "a", "outcome": "success", "started_at": T, "ended_at": T,
                 "duration": 1.5, "context": {"complexity": 7, "lang": "go", "ok": True}}),
            (3, {"op_type": "a", "outcome": "failure", "started_at": T, "ended_at": T}),
            (6, {"op_type": "b", "outcome": "skipped", "started_at": T, "ended_at": T,
                 "context": {"complexity": 2.5, "lang": 'say "hi"', "ok": None}}),
        ]
        assert bad == [Problem(4, "more cells than the header has columns"),
                       Problem(5, bad[1].message)]
        assert "neither Unix seconds nor an ISO 8601 time" in bad[1].message

    def test_context_column_as_json(self, tmp_path: Path) -> None:
        f = tmp_path / "ops.csv"
        f.write_text('op_type,outcome,started_at,context\n'
                     'a,success,1790000000,"{""complexity"": 4}"\n'
                     'a,success,1790000000,{oops\n')
        good, bad = parse_file(f)
        assert good == [(2, {"op_type": "a", "outcome": "success", "started_at": T,
                             "ended_at": T, "context": {"complexity": 4}})]
        assert bad == [Problem(3, "the context column must hold a JSON object")]

    def test_unknown_column(self, tmp_path: Path) -> None:
        f = tmp_path / "ops.csv"
        f.write_text("op_type,outcome,started_at,colour\na,success,1790000000,red\n")
        good, bad = parse_file(f)
        assert good == [] and len(bad) == 1 and "unknown field 'colour'" in bad[0].message

    def test_header_only(self, tmp_path: Path) -> None:
        f = tmp_path / "ops.csv"
        f.write_text("op_type,outcome,started_at\n")
        assert parse_file(f) == ([], [])


ROWS: list[tuple[Any, ...]] = [
    ("a", "success", T, T + 2, "issue-1", None, None, 2.0,
     json.dumps({"complexity": 7, "lang": "go"})),
    ("a", "failure", T + 10, T + 11.5, None, "TimeoutError", "timed out, after 30s", 1.5,
     json.dumps({"complexity": 9, "ok": False, "ratio": 0.25})),
    ("b", "skipped", T + 20, T + 20, None, "Refused", None, 0.0, None),
]


class TestExport:
    def test_jsonl(self) -> None:
        out = io.StringIO()
        assert export_rows(ROWS, "jsonl", out) == 3
        records = [json.loads(line) for line in out.getvalue().splitlines()]
        assert records[0] == {"op_type": "a", "outcome": "success",
                              "started_at": "2026-09-21T14:13:20Z",
                              "ended_at": "2026-09-21T14:13:22Z", "key": "issue-1",
                              "duration": 2.0, "context": {"complexity": 7, "lang": "go"}}
        assert records[1]["error_message"] == "timed out, after 30s"
        assert "context" not in records[2] and "key" not in records[2]

    def test_csv(self) -> None:
        out = io.StringIO()
        assert export_rows(ROWS, "csv", out) == 3
        table = list(csv.reader(io.StringIO(out.getvalue())))
        assert table[0] == [*FIELDS, "context.complexity", "context.lang", "context.ok",
                            "context.ratio"]
        assert table[1] == ["a", "success", "2026-09-21T14:13:20Z", "2026-09-21T14:13:22Z",
                            "issue-1", "", "", "2.0", "7", "go", "", ""]
        assert table[2][5:] == ["TimeoutError", "timed out, after 30s", "1.5", "9", "", "false",
                                "0.25"]
        assert table[3][:2] == ["b", "skipped"] and table[3][8:] == ["", "", "", ""]

    def test_nothing(self) -> None:
        out = io.StringIO()
        assert export_rows([], "jsonl", out) == 0
        assert out.getvalue() == ""
        assert export_rows([], "csv", out) == 0
        assert out.getvalue().strip() == ",".join(FIELDS)

    @pytest.mark.parametrize("fmt", ["jsonl", "csv"])
    def test_round_trip(self, fmt: str, tmp_path: Path) -> None:
        """What export writes, import reads back as the same records."""
        f = tmp_path / f"ops.{fmt}"
        with f.open("w", encoding="utf-8", newline="") as out:
            export_rows(ROWS, fmt, out)
        good, bad = parse_file(f)
        assert bad == []
        got = [rec for _, rec in good]
        want = [
            {"op_type": "a", "outcome": "success", "started_at": T, "ended_at": T + 2,
             "key": "issue-1", "duration": 2.0, "context": {"complexity": 7, "lang": "go"}},
            {"op_type": "a", "outcome": "failure", "started_at": T + 10, "ended_at": T + 11.5,
             "error_type": "TimeoutError", "error_message": "timed out, after 30s",
             "duration": 1.5, "context": {"complexity": 9, "ok": False, "ratio": 0.25}},
            {"op_type": "b", "outcome": "skipped", "started_at": T + 20, "ended_at": T + 20,
             "error_type": "Refused", "duration": 0.0},
        ]
        assert got == want
