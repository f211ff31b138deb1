"""Error clustering: masks, frequency-based mining, tracebacks, and accuracy on labelled data."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import learnkit
from learnkit._insights.clustering import (
    Clusterer,
    cluster_messages,
    grouping_accuracy,
    mask,
    signature,
)

LOGHUB = Path(os.environ.get(
    "LEARNKIT_LOGHUB_DIR",
    Path(__file__).resolve().parents[3] / "shared" / "data" / "loghub-dev",
))
DATASETS = ("Android", "BGL", "HDFS", "HealthApp", "HPC", "OpenSSH", "Proxifier", "Zookeeper")
ORCHESTRATOR = Path(__file__).resolve().parents[1] / "data" / "orchestrator_messages.jsonl"


def groups(messages: list[str]) -> list[set[int]]:
    """The predicted partition, as sets of message indexes."""
    by: dict[str, set[int]] = {}
    for i, t in enumerate(cluster_messages(messages)):
        by.setdefault(t, set()).add(i)
    return sorted(by.values(), key=min)


class TestMask:
    @pytest.mark.parametrize(
        ("message", "expected"),
        [
            ("Connection from 10.0.0.12:5432 refused", "Connection from <*>:<*> refused"),
            ("fetch https://api.example.com/v1/items?id=3 failed", "fetch <*> failed"),
            ("cannot open /var/lib/app/data-7.db", "cannot open <*>"),
            ("job 3f2a9c1e-1b2c-4d5e-8f90-123456789abc died", "job <*> died"),
            ("segfault at 0x7ffd3c2a", "segfault at <*>"),
            ("timed out after 30s", "timed out after <*>"),
            ("sent 785 bytes in 12 ms", "sent <*> in <*>"),
            ("at 2024-05-01T12:00:03Z and 12:30:45.123", "at <*> and <*>"),
            ("Jun 14 15:16:01 combo sshd", "<*> combo sshd"),
            ("blk_-6952295868487656571 terminating", "blk_<*> terminating"),
            ("ssh2 session for sshd", "ssh2 session for sshd"),
            ("action:android.intent.action.SCREEN_ON", "action:android.intent.action.SCREEN_ON"),
        ],
    )
    def test_typed_values_are_masked(self, message: str, expected: str) -> None:
        """Typed values become <*>; words, digits inside words and constants stay."""
        assert mask(message) == expected

    def test_quoted_strings_and_key_values_are_not_masked(self) -> None:
        """Whole quoted strings and key= values are left for mining to judge."""
        assert mask('request "GET /v2/items" failed') == 'request "GET <*>" failed'
        assert mask("session opened user=root") == "session opened user=root"

    def test_file_line_is_not_a_port(self) -> None:
        """``file.c:1455`` keeps its name; only the number is a value."""
        assert mask("assert failed at file.c:1455") == "assert failed at file.c:<*>"

    def test_value_change_keeps_token_count(self) -> None:
        """Splitting at = : and brackets: CurrentState:0 and CurrentState:112 align."""
        assert signature("CurrentState:0 ok") == signature("CurrentState:112 ok")
        assert signature("state=(0) ok") == signature("state=(1234) ok")

    def test_signature_is_idempotent(self) -> None:
        """Masking a signature again changes nothing (stored signatures can be re-mined)."""
        for m in ["Failed password for root from 10.1.2.3 port 22 ssh2",
                  "proxy.cse.cuhk.edu.hk:5070 close, 1190 bytes (1.16 KB) sent, lifetime <1 sec",
                  "read /tmp/x/y.txt: 0x7f00 at 12:00:01"]:
            assert signature(signature(m)) == signature(m)

    def test_signature_runs_collapse(self) -> None:
        """Adjacent variables collapse, so a list of values keeps the shape."""
        assert signature("a 1 2 3 b") == signature("a 7 b") == "a <*> b"

    def test_coarse_is_the_same_signature(self) -> None:
        """Write-time (coarse) signatures equal analysis signatures: v2 and v3 stay apart."""
        assert signature("v2 api failed", coarse=True) == "v2 api failed"
        assert signature("v2 api failed", coarse=True) != signature("v3 api failed", coarse=True)

    @settings(max_examples=200, deadline=None)
    @given(st.text(max_size=80))
    def test_signature_idempotent_any_text(self, message: str) -> None:
        """Any text: re-masking a signature is a no-op."""
        s = signature(message)
        assert signature(s) == s


class TestIssueFailures:
    """One test per failure the diagnosis on unseen data found (issue 11)."""

    def test_quoted_methods_kept_apart(self) -> None:
        """"GET ...", "POST ..." and "DELETE ..." requests are not one group."""
        msgs = [f'request "{verb} /v2/items/{i}" failed with {code}'
                for i, (verb, code) in enumerate([("GET", 500), ("POST", 502), ("DELETE", 503)] * 6)]
        got = cluster_messages(msgs)
        assert len(set(got)) == 3

    def test_key_value_constants_kept_apart(self) -> None:
        """user=root and user=guest, each frequent, are two events."""
        msgs = [f"login ok user=root session={i}" for i in range(20)]
        msgs += [f"login ok user=guest session={i}" for i in range(20)]
        assert len(set(cluster_messages(msgs))) == 2

    def test_key_value_variables_merge(self) -> None:
        """A key whose values are mostly seen once is a variable."""
        msgs = [f"login ok user=u{chr(97 + i % 26)}{i} session={i}" for i in range(30)]
        assert len(set(cluster_messages(msgs))) == 1

    def test_file_line_not_a_port(self) -> None:
        """Different source files stay different events; their line numbers are values."""
        msgs = [f"assert failed at file.c:{n}" for n in range(1400, 1420)]
        msgs += [f"assert failed at other.c:{n}" for n in range(10, 30)]
        assert len(set(cluster_messages(msgs))) == 2

    def test_rare_outlier_does_not_split_large_group(self) -> None:
        """One odd value among hundreds leaves the large group whole."""
        msgs = [f"connect from 10.0.{i // 256}.{i % 256} accepted" for i in range(567)]
        msgs.append("connect from LOCAL(0) accepted")
        got = cluster_messages(msgs)
        assert len(set(got[:567])) == 1
        msgs = [f"VM {s} id {i}" for i, s in enumerate(["Resumed"] * 300 + ["Paused"] * 290)]
        msgs.append("VM Crashed id 7")
        got = cluster_messages(msgs)
        assert len(set(got[:300])) == 1 and len(set(got[300:590])) == 1
        assert got[0] != got[300]

    def test_constant_choice_by_support(self) -> None:
        """Values that each recur are constants; a scatter of rare values is a variable."""
        states = ["Resumed", "Started", "Paused", "Stopped"]
        msgs = [f"VM {states[i % 4]} after {i} ms" for i in range(80)]
        assert len(set(cluster_messages(msgs))) == 4
        users = ["root"] * 50 + [f"user{c}x" for c in "abcdefgh"]
        msgs = [f"Failed password for {u} from 10.0.0.{i % 200} port {i} ssh2"
                for i, u in enumerate(users)]
        assert len(set(cluster_messages(msgs))) == 1

    def test_empty_field_does_not_split(self) -> None:
        """An empty () and a filled (host.name) are one event."""
        msgs = [f"resolve ({'' if i % 3 == 0 else f'host{chr(97 + i % 26)}.example.org'}) took {i} ms"
                for i in range(40)]
        assert len(set(cluster_messages(msgs))) == 1

    def test_variable_length_value_list(self) -> None:
        """A list of one or several values is one event."""
        msgs = [f"nodes [{' '.join(str(j) for j in range(i % 5 + 1))}] down" for i in range(20)]
        assert len(set(cluster_messages(msgs))) == 1

    def test_optional_annotation(self) -> None:
        """An optional variable annotation does not split a cluster."""
        got = cluster_messages([
            "proxy:80 close, 785 bytes sent, 145 bytes received, lifetime <1 sec",
            "proxy:80 close, 2034 bytes (1.98 KB) sent, 4206 bytes (4.10 KB) received, "
            "lifetime 00:39",
        ] * 3)
        assert len(set(got)) == 1

    def test_optional_constant_field_is_an_event(self) -> None:
        """A field with a constant key present in only some messages makes another event."""
        msgs = [f"auth failure; rhost=10.0.0.{i} user=x{i}" for i in range(30)]
        msgs += [f"auth failure; rhost=10.0.1.{i}" for i in range(30)]
        assert len(set(cluster_messages(msgs))) == 2

    def test_digit_bearing_first_token(self) -> None:
        """A first token with digits is judged like any other position."""
        msgs = ["en0: channel changed to 1"] * 3 + ["en0: link up"] * 3
        msgs += [f"en{i}: link down" for i in range(3)]
        got = cluster_messages(msgs)
        assert len({got[0], got[3], got[6]}) == 3
        codes = [f"E{n} line too long in file x.py" for n in range(100, 160)]
        assert len(set(cluster_messages(codes))) == 1
        two = ["v2 api failed"] * 4 + ["v3 api failed"] * 4
        assert set(cluster_messages(two)) == {"v2 api failed", "v3 api failed"}


TRACEBACK = """Traceback (most recent call last):
  File "/srv/app/jobs.py", line {line}, in run
    result = step(payload)
  File "/srv/app/steps.py", line 88, in step
    raise ValueError(f"bad payload {{payload!r}}")
ValueError: bad payload <Payload object at 0x{addr:x}> in /tmp/tmp{tmp}/in.json"""


class TestReports:
    def test_traceback_key(self) -> None:
        """Type, raising frame and masked message; line numbers and repr noise vary freely."""
        a = TRACEBACK.format(line=10, addr=0x7F00AA, tmp="k3j2h1")
        b = TRACEBACK.format(line=12, addr=0x7F11BB, tmp="zz99qq")
        assert signature(a) == signature(b)
        assert signature(a).startswith("⟦ValueError @ steps.py:step⟧ bad payload")
        assert cluster_messages([a, b]) == [signature(a)] * 2

    def test_traceback_prefix_and_ansi(self) -> None:
        """Log prefixes on every line and ANSI colours are stripped."""
        plain = TRACEBACK.format(line=10, addr=1, tmp="abcdef")
        lines = plain.splitlines()
        prefixed = "\n".join(f"2025-01-0{i % 9 + 1} 10:00:0{i % 9} ERROR w[{i}]: \x1b[31m{x}\x1b[0m"
                             for i, x in enumerate(lines))
        assert signature(prefixed) == signature(plain)

    def test_different_raise_sites_apart(self) -> None:
        """The same exception type and message from two frames are two events."""
        a = TRACEBACK.format(line=10, addr=1, tmp="abcdef")
        b = a.replace("steps.py", "other.py")
        assert signature(a) != signature(b)
        assert len(set(cluster_messages([a, b] * 3))) == 2

    def test_pytest_report(self) -> None:
        """A pytest long report and its FAILED summary: assertion and test, ids masked."""
        report = (
            "n = 3\n\n    def test_sq(n):\n>       assert n * n < 5\nE       assert (3 * 3) < 5\n\n"
            "tests/test_m.py:12: AssertionError"
        )
        assert signature(report) == "⟦AssertionError @ test_m.py:test_sq⟧ assert (<*> * <*>) < <*>"
        s1 = signature("FAILED tests/test_m.py::test_sq[3] - assert (3 * 3) < 5")
        s2 = signature("FAILED tests/test_m.py::test_sq[7-b] - assert (7 * 7) < 5")
        assert s1 == s2 == signature(report)

    def test_orchestrator_messages(self) -> None:
        """Real tracebacks and pytest reports (tests/data), labelled by raise site: GA >= 0.95."""
        rows = [json.loads(line) for line in ORCHESTRATOR.read_text().splitlines()]
        got = cluster_messages([r["message"] for r in rows])
        assert grouping_accuracy(got, [r["event"] for r in rows]) >= 0.95


class TestClusterMessages:
    def test_docstring_example(self) -> None:
        """Names that vary across messages are learned as variables."""
        got = learnkit.cluster_messages([
            "Invalid user admin from 10.0.0.1",
            "Invalid user test from 10.0.0.2",
            "Invalid user oracle from 10.0.0.9",
        ])
        assert got == ["Invalid user <*> from <*>"] * 3

    def test_two_constants_stay_apart(self) -> None:
        """Two words seen repeatedly at one position are two events, not a variable."""
        msgs = ["screen turned ON"] * 5 + ["screen turned OFF"] * 5
        assert set(learnkit.cluster_messages(msgs)) == {"screen turned ON", "screen turned OFF"}

    def test_weights_equal_repeats(self) -> None:
        """Clustering signatures with their counts equals clustering the messages."""
        msgs = ([f"Failed password for root from 10.0.0.{i} port 22 ssh2" for i in range(40)]
                + [f"Failed password for {u} from 10.0.0.1 port 22 ssh2" for u in "abcdef"])
        sigs: dict[str, int] = {}
        for m in msgs:
            s = signature(m)
            sigs[s] = sigs.get(s, 0) + 1
        by_sig = dict(zip(sigs, cluster_messages(list(sigs), list(sigs.values())), strict=True))
        assert [by_sig[signature(m)] for m in msgs] == cluster_messages(msgs)

    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.text(max_size=80), max_size=30))
    def test_any_text(self, messages: list[str]) -> None:
        """Any input: no exception, one template per message, equal messages share one."""
        got = learnkit.cluster_messages(messages)
        assert len(got) == len(messages)
        for m, t in zip(messages, got, strict=True):
            assert isinstance(t, str)
            assert got[messages.index(m)] == t
        assert learnkit.cluster_messages(messages) == got


class TestIncremental:
    def test_memory_bounded_by_templates(self) -> None:
        """Many distinct messages of few templates: the pattern table stays small."""
        c = Clusterer(budget=200)
        for i in range(5000):
            c.add(f"Invalid user u{i}x from 10.0.{i % 250}.{i % 7}")
            c.add(f"Accepted password for u{i}y from 10.1.0.{i % 250} port {i} ssh2")
        assert len(c) <= 400
        assert set(c.templates()) == {"Invalid user <*> from <*>",
                                      "Accepted password for <*> from <*> port <*> ssh2"}
        assert c.template("Invalid user zed from 1.2.3.4") == "Invalid user <*> from <*>"

    def test_agrees_with_batch(self) -> None:
        """Without compaction the incremental clusterer gives the batch templates."""
        msgs = ([f"screen turned {s}" for s in ["ON", "OFF"] * 5]
                + [f"Invalid user u{i}x from 10.0.0.{i}" for i in range(10)])
        c = Clusterer()
        for m in msgs:
            c.add(m)
        assert [c.template(m) for m in msgs] == cluster_messages(msgs)


def test_grouping_accuracy_metric() -> None:
    """The loghub metric: a message counts only if its whole group is exactly right."""
    assert grouping_accuracy(["a", "a", "b"], ["x", "x", "y"]) == 1.0
    assert grouping_accuracy(["a", "a", "a"], ["x", "x", "y"]) == 0.0
    assert grouping_accuracy(["a", "b", "c"], ["x", "x", "y"]) == pytest.approx(1 / 3)


def _dataset(name: str) -> tuple[list[str], list[str]]:
    path = LOGHUB / name / f"{name}_2k.log_structured.csv"
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    return [r["Content"] for r in rows], [r["EventId"] for r in rows]


def test_grouping_accuracy_on_loghub() -> None:
    """One configuration on all eight loghub-dev datasets: mean GA >= 0.95, each >= 0.85."""
    if not LOGHUB.is_dir():
        if os.environ.get("LEARNKIT_REQUIRE_LOGHUB"):
            pytest.fail(f"labelled data not found at {LOGHUB}; set LEARNKIT_LOGHUB_DIR")
        pytest.skip(f"labelled data not found at {LOGHUB} (set LEARNKIT_LOGHUB_DIR)")
    scores = {}
    for name in DATASETS:
        messages, truth = _dataset(name)
        scores[name] = grouping_accuracy(learnkit.cluster_messages(messages), truth)
    assert sum(scores.values()) / len(scores) >= 0.95, scores
    assert min(scores.values()) >= 0.85, scores
