"""Credentials never reach the database, the report, the JSON insights or an export."""

from __future__ import annotations

import json
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import learnkit
from learnkit._scrub import Scrubber

from .conftest import BASE_CONFIG, write_config

ROOT = Path(__file__).resolve().parents[1]

SECRETS = {
    "password": ("login failed: password=hunter2 for bob", "hunter2"),
    "bearer jwt": (
        "401 with Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiI0MiJ9.c2lnbmF0dXJlX3g",
        "eyJzdWIiOiI0MiJ9"),
    "url password": ("cannot connect postgres://app:s3cr3tpw@db:5432/main", "s3cr3tpw"),
    "aws key id": ("denied for AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE"),
    "aws secret": ("aws_secret_access_key=wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY",
                   "wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY"),
    "private key": ("-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAzq9\n"
                    "-----END RSA PRIVATE KEY-----", "MIIEowIBAAKCAQEAzq9"),
    "github token": ("push failed with ghp_abcdefghijklmnopqrstuvwxyz0123456789",
                     "ghp_abcdefghijklmnopqrstuvwxyz0123456789"),
}


def test_each_kind_is_redacted_in_text() -> None:
    s = Scrubber()
    for name, (text, secret) in SECRETS.items():
        assert secret not in s.text(text), name
        assert "[REDACTED]" in s.text(text), name
    assert s.text("3 tests failed in test_parser.py") == "3 tests failed in test_parser.py"


def test_keys_safe_keys_and_extra_patterns() -> None:
    s = Scrubber(safe_keys=["session_id"], patterns=[r"INTERNAL-\d+"])
    assert s.sensitive_key("api_key") and s.sensitive_key("X-Auth-Token")
    assert not s.sensitive_key("max_tokens") and not s.sensitive_key("complexity")
    assert not s.sensitive_key("session_id")
    assert s.text("ticket INTERNAL-42 leaked") == "ticket [REDACTED] leaked"


def test_secrets_absent_from_database_report_json_and_export(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)

    async def record() -> None:
        async with learnkit.open(cfg) as kit:
            now = kit.now()
            for i, (text, _) in enumerate(SECRETS.values()):
                for j in range(3):
                    kit.record("deploy", outcome="failure", started_at=now - 3600 - i - j,
                               error_type="AuthError", error_message=text,
                               context={"api_key": "sk_live_abcdefghijklmnopqrstuvwx",
                                        "password": "hunter2", "note": text})
            kit.record("deploy", outcome="success", started_at=now - 100)
            assert await kit.flush()

    import asyncio

    asyncio.run(record())
    db = tmp_path / "learnkit.db"
    dump = "\n".join(sqlite3.connect(db).iterdump())
    outputs = {"database": dump}
    for name, argv in {
        "report": ["report", "--days", "30", "--detailed"],
        "json": ["insights", "--json", "--days", "30"],
        "export": ["export"],
    }.items():
        proc = subprocess.run(
            [sys.executable, "-m", "learnkit", "--config", str(cfg), *argv],
            capture_output=True, text=True, cwd=tmp_path, env={"PYTHONPATH": str(ROOT)},
        )
        assert proc.returncode == 0, proc.stderr
        outputs[name] = proc.stdout
    for where, text in outputs.items():
        for kind, (_, secret) in SECRETS.items():
            assert secret not in text, f"{kind} in {where}"
        assert "hunter2" not in text and "sk_live_" not in text, where
    assert "[REDACTED]" in outputs["database"]


def test_database_files_are_private(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)

    async def run() -> None:
        async with learnkit.open(cfg) as kit:
            kit.record("x", outcome="success", started_at=1000.0)
            await kit.flush()
            for suffix in ("", "-wal", "-shm"):
                f = tmp_path / f"learnkit.db{suffix}"
                if f.exists():
                    assert stat.S_IMODE(f.stat().st_mode) == 0o600, suffix

    import asyncio

    asyncio.run(run())
    assert json.dumps(BASE_CONFIG)  # the shared config stays as the fixtures wrote it
