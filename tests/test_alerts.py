"""Alerts: a real HTTP server on loopback receives what the learning loop found."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import random
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

import learnkit
from learnkit._alerts import AlertEvent, Alerts, payload, redact
from learnkit._cli import main
from learnkit._config import AlertsConfig, AlertTargetConfig

from .conftest import BASE_CONFIG, T0, Clock

DAY = 86400.0
SECRET = "T000/B000/s3cr3t-t0ken"


class Hooks:
    """A loopback HTTP server: records each POST; ``/flaky`` answers 500 ``fail`` times first,
    ``/down`` always 500."""

    def __init__(self, fail: int = 3) -> None:
        self.received: list[tuple[str, Any]] = []
        self.hits: dict[str, int] = {}
        self.fail = fail
        hooks = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                path = self.path.split("/")[1]
                n = hooks.hits[path] = hooks.hits.get(path, 0) + 1
                if path == "down" or (path == "flaky" and n <= hooks.fail):
                    self.send_response(500)
                    self.end_headers()
                    return
                hooks.received.append((path, json.loads(body)))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def bodies(self, path: str) -> list[Any]:
        return [b for p, b in self.received if p == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def hooks() -> Iterator[Hooks]:
    h = Hooks()
    yield h
    h.close()


ALERTS = """
[alerts]
min_interval = 0
backoff = 0.01
retries = 4

[alerts.targets.ops]
url_env = "LK_TEST_OPS_URL"

[alerts.targets.slack]
url_env = "LK_TEST_SLACK_URL"
format = "slack"
events = ["new_cluster", "threshold_change", "rollback"]

[alerts.targets.broken]
url_env = "LK_TEST_DOWN_URL"
events = ["threshold_change"]
"""


def plant(kit: learnkit.Kit, now: float) -> None:
    """A week of old failures, then six days where complexity 8 fails with a new error."""
    r = random.Random(3)
    for _ in range(700):  # the week before: rare, known failures
        t = now - r.uniform(7 * DAY + 60, 14 * DAY - 60)
        if r.random() < 0.08:
            kit.record("process_issue", outcome="failure", started_at=t,
                       context={"complexity": r.randint(1, 8)}, error_type="TimeoutError",
                       error_message=f"request {r.randint(1, 999)} timed out")
        else:
            kit.record("process_issue", outcome="success", started_at=t,
                       context={"complexity": r.randint(1, 7)})
    for _ in range(600):  # this week: complexity 8 fails with a new error
        t = now - r.uniform(60, 6 * DAY)
        cx = r.randint(1, 8)
        if r.random() < (0.85 if cx == 8 else 0.05):
            kit.record("process_issue", outcome="failure", started_at=t,
                       context={"complexity": cx}, error_type="ConnectionError",
                       error_message=f"connection to db-{r.randint(1, 9)} refused")
        else:
            kit.record("process_issue", outcome="success", started_at=t,
                       context={"complexity": cx})


async def test_loop_alerts_reach_webhooks_with_retries(
    tmp_path: Path, hooks: Hooks, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A planted new cluster and the threshold change it causes reach both targets; the
    flaky one after retries; the broken one is reported, and user code sees no error."""
    monkeypatch.setenv("LK_TEST_OPS_URL", f"{hooks.url}/ops/{SECRET}")
    monkeypatch.setenv("LK_TEST_SLACK_URL", f"{hooks.url}/flaky/{SECRET}")
    monkeypatch.setenv("LK_TEST_DOWN_URL", f"{hooks.url}/down/{SECRET}")
    p = tmp_path / "learnkit.toml"
    p.write_text(BASE_CONFIG + ALERTS)
    clock = Clock(T0)
    caplog.set_level(logging.INFO, logger="learnkit")
    async with learnkit.open(p, clock=clock) as kit:
        plant(kit, T0)
        await kit.flush()
        report = await kit.learn_once()  # user code: must not raise
        assert [c.name for c in report.applied] == ["max_complexity"]
        assert await kit.alerts.drain(timeout=20)
        ops = hooks.bodies("ops")
        assert len(ops) == 1
        kinds = {e["kind"] for e in ops[0]["events"]}
        assert {"new_cluster", "threshold_change"} <= kinds
        new = next(e for e in ops[0]["events"] if e["kind"] == "new_cluster")
        assert new["data"]["error_type"] == "ConnectionError"
        assert "refused" in new["data"]["example"]
        change = next(e for e in ops[0]["events"] if e["kind"] == "threshold_change")
        assert change["data"]["name"] == "max_complexity" and change["data"]["new_value"] == 7
        assert ops[0]["source"] == "learnkit" and ops[0]["version"] == 1

        # the flaky Slack target: 3 x 500, then delivered; only its chosen events
        [slack] = hooks.bodies("flaky")
        assert hooks.hits["flaky"] == 4
        assert set(slack) == {"text"}
        assert "New error cluster" in slack["text"] and "max_complexity" in slack["text"]
        assert "Recommendation" not in slack["text"]
        stats = kit.alerts.stats()
        assert stats["slack"].sent == 1 and stats["slack"].failed_attempts == 3

        # the broken target: every attempt fails, it is reported, nothing raises
        assert hooks.hits["down"] == 5
        assert stats["broken"].given_up == 1 and stats["broken"].sent == 0
        assert stats["broken"].last_error == f"HTTP 500 from {hooks.url}/***"

        # the same findings are not sent again at the next analysis
        clock.advance(3600)
        await kit.learn_once()
        await kit.alerts.drain(timeout=10)
        later = [e for b in hooks.bodies("ops")[1:] for e in b["events"]]
        assert [e for e in later if e["kind"] in ("new_cluster", "threshold_change")] == []
    text = caplog.text
    assert "gave up a message" in text and "'broken'" in text
    assert SECRET not in text  # the secret part of the URL is never logged


async def test_a_rollback_is_sent(tmp_path: Path, hooks: Hooks,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A rollback (here by hand) appears at the next analysis as a rollback event."""
    monkeypatch.setenv("LK_TEST_OPS_URL", f"{hooks.url}/ops")
    p = tmp_path / "learnkit.toml"
    p.write_text(BASE_CONFIG + "\n[alerts]\nmin_interval = 0\n[alerts.targets.ops]\n"
                 'url_env = "LK_TEST_OPS_URL"\nevents = ["rollback"]\n')
    clock = Clock(T0)
    async with learnkit.open(p, clock=clock) as kit:
        plant(kit, T0)
        await kit.flush()
        assert (await kit.learn_once()).applied
        await kit.controller.rollback("max_complexity")
        clock.advance(60)
        await kit.learn_once()
        await kit.alerts.drain(timeout=10)
    [body] = hooks.bodies("ops")
    assert [e["kind"] for e in body["events"]] == ["rollback"]
    assert body["events"][0]["title"] == "Threshold max_complexity rolled back: 7 -> 8"


async def test_batched_and_rate_limited() -> None:
    """Events within min_interval of the last message wait and go out together; closing
    sends what waits at once."""
    sent: list[dict[str, Any]] = []

    def post(url: str, body: bytes, timeout: float) -> tuple[int, float | None]:
        sent.append(json.loads(body))
        return 200, None

    ac = AlertsConfig(min_interval=3600, max_events=2,
                      targets={"t": AlertTargetConfig(url="http://127.0.0.1:9/x")})
    alerts = Alerts(lambda: ac, post=post)

    def ev(i: int) -> AlertEvent:
        return AlertEvent("new_cluster", f"k{i}", f"title {i}", "text", 0.0)

    alerts.publish([ev(0)])
    await alerts.drain(1)
    assert [len(b["events"]) for b in sent] == [1]
    alerts.publish([ev(1), ev(2)])
    alerts.publish([ev(3)])
    await asyncio.sleep(0.05)
    assert len(sent) == 1  # rate-limited: waiting for the next slot
    await alerts.aclose(5)
    assert len(sent) == 2
    assert [e["key"] for e in sent[1]["events"]] == ["k1", "k2"] and sent[1]["more"] == 1
    assert alerts.stats()["t"].events_sent == 4


async def test_unset_environment_variable_is_reported_not_raised() -> None:
    ac = AlertsConfig(min_interval=0, targets={"t": AlertTargetConfig(url_env="LK_NOPE")})
    alerts = Alerts(lambda: ac, environ={})
    alerts.publish([AlertEvent("new_cluster", "k", "t", "x", 0.0)])
    await alerts.drain(5)
    st = alerts.stats()["t"]
    assert st.given_up == 1 and "LK_NOPE is not set" in (st.last_error or "")


def test_redact_and_payloads() -> None:
    assert redact("https://hooks.slack.com/services/T/B/secret") == "https://hooks.slack.com/***"
    assert redact("http://127.0.0.1:8080/a?token=x") == "http://127.0.0.1:8080/***"
    e = AlertEvent("rollback", "change:1", "Threshold x rolled back", "why", 1.0, {"id": 1})
    assert payload("slack", [e], more=2)["text"].endswith("… and 2 more")
    body = payload("json", [e], source="/srv/learnkit.toml")
    assert body["events"][0]["data"] == {"id": 1} and body["config"] == "/srv/learnkit.toml"


def test_slack_text_from_recorded_data_is_not_markup() -> None:
    """An error message is recorded data: in a Slack message it must not ping the
    channel, mention anyone or become a link; the JSON payload keeps it as it was."""
    msg = "boom <!channel> <@U024BE7LH> <https://evil.example|click here> a&b @here"
    e = AlertEvent("new_cluster", "c1", f"RuntimeError '{msg}'", msg, 1.0)
    text = payload("slack", [e], source="</srv/x>")["text"]
    assert "<" not in text and ">" not in text
    assert "&lt;!channel&gt;" in text and "a&amp;b" in text
    assert "@here" not in text and "@\u200bhere" in text
    assert payload("json", [e])["events"][0]["text"] == msg


def test_cli_alerts_test(tmp_path: Path, hooks: Hooks, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LK_TEST_OPS_URL", f"{hooks.url}/ops/{SECRET}")
    monkeypatch.setenv("LK_TEST_SLACK_URL", f"{hooks.url}/flaky/{SECRET}")
    monkeypatch.setenv("LK_TEST_DOWN_URL", f"{hooks.url}/down/{SECRET}")
    p = tmp_path / "learnkit.toml"
    p.write_text(BASE_CONFIG + ALERTS)
    out = io.StringIO()
    assert main(["--config", str(p), "alerts", "test", "--target", "ops", "--target", "slack"],
                out=out) == 0
    assert f"ops: sent (json) to {hooks.url}/***" in out.getvalue()
    assert SECRET not in out.getvalue()
    assert hooks.bodies("ops")[0]["events"][0]["kind"] == "test"
    assert "learnkit test alert" in hooks.bodies("flaky")[0]["text"]
    out = io.StringIO()
    assert main(["--config", str(p), "alerts", "test"], out=out) == 1
    assert "broken: FAILED (json)" in out.getvalue() and "HTTP 500" in out.getvalue()
    assert main(["--config", str(p), "alerts", "test", "--target", "nope"], out=out) == 2
    p.write_text(BASE_CONFIG)
    assert main(["--config", str(p), "alerts", "test"], out=out) == 2


@pytest.mark.parametrize(("table", "message"), [
    ('[alerts.targets.x]\nurl_env = "A"\nevents = ["nope"]\n',
     "alerts.targets.x.events: 'nope' is not one of new_cluster"),
    ('[alerts.targets.x]\nurl_env = "A"\nformat = "xml"\n', "'xml' is not one of 'json', 'slack'"),
    ('[alerts.targets.x]\nurl_env = "A"\nurll = "x"\n', "unknown key 'urll'; valid keys: url_env"),
    ("[alerts.targets.x]\n", "set exactly one of url_env"),
    ('[alerts.targets.x]\nurl = "ftp://host/x"\n', "must be an http:// or https:// URL"),
    ("[alerts]\nretries = 99\n", "alerts.retries: must lie in [0, 20]"),
])
def test_bad_alerts_tables_are_named(tmp_path: Path, table: str, message: str) -> None:
    p = tmp_path / "learnkit.toml"
    p.write_text(BASE_CONFIG + "\n" + table)
    with pytest.raises(learnkit.ConfigError) as info:
        learnkit.load_config(p)
    assert message in str(info.value)
