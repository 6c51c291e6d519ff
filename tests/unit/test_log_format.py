"""router/logs.py: JSON lines when the log stream is not a terminal, key=value lines on a
terminal, CRMSYNC_LOG_FORMAT to choose; the same fields either way."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys

import pytest

from router.logs import JsonFormatter, LogfmtFormatter, formatter_for


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def _record(**kv: object) -> logging.LogRecord:
    record = logging.LogRecord(
        "crmsync.router", logging.INFO, __file__, 1, "router started", (), None
    )
    record.kv = kv
    return record


def test_json_carries_the_message_and_the_fields() -> None:
    line = JsonFormatter().format(_record(hub_actor="hub", adapters="legacy,sales", event="x"))
    out = json.loads(line)
    assert out["event"] == "router started"  # a field named event cannot hide the message
    assert (out["level"], out["logger"], out["hub_actor"]) == ("info", "crmsync.router", "hub")
    assert out["ts"].endswith("Z")


def test_the_format_follows_the_stream_unless_told(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CRMSYNC_LOG_FORMAT", raising=False)
    assert isinstance(formatter_for(io.StringIO()), JsonFormatter)
    assert isinstance(formatter_for(_Tty()), LogfmtFormatter)
    monkeypatch.setenv("CRMSYNC_LOG_FORMAT", "logfmt")
    assert isinstance(formatter_for(io.StringIO()), LogfmtFormatter)
    monkeypatch.setenv("CRMSYNC_LOG_FORMAT", "json")
    assert isinstance(formatter_for(_Tty()), JsonFormatter)


def test_a_process_whose_stderr_is_a_pipe_logs_json_lines() -> None:
    code = (
        "import logging; from router import logs; logs.configure();"
        "logging.getLogger('crmsync.adapter.legacy').warning("
        "'capture cycle failed, retrying', extra=logs.kv(adapter='legacy', error='Timeout'))"
    )
    env = {k: v for k, v in os.environ.items() if k != "CRMSYNC_LOG_FORMAT"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=30
    )
    (line,) = done.stderr.splitlines()
    assert json.loads(line) | {"ts": ""} == {
        "ts": "",
        "level": "warning",
        "logger": "crmsync.adapter.legacy",
        "event": "capture cycle failed, retrying",
        "adapter": "legacy",
        "error": "Timeout",
    }
