"""The README's main command, as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def _demo(env_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "router.cli", "demo", *args],
        env={**os.environ, "CRMSYNC_AMQP_URL": env_url},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def test_demo_runs_end_to_end_and_exits_0(amqp: str, tmp_path: Path) -> None:
    result = _demo(amqp, "--dir", str(tmp_path), "--records", "60")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "60 contacts created in legacy reached sales and mktg" in out
    assert "conflict(s) detected" in out
    assert "all three CRMs hold the same contacts: yes" in out
    assert "stopped cleanly" in out
    assert "Traceback" not in (tmp_path / "logs" / "router.log").read_text()
    for name in ("legacy", "sales", "mktg"):
        assert (tmp_path / f"{name}.db").exists()


def test_demo_without_a_broker_says_so_in_one_line(tmp_path: Path) -> None:
    result = _demo("amqp://guest:guest@127.0.0.1:1/", "--dir", str(tmp_path))
    assert result.returncode == 3
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "cannot reach RabbitMQ" in lines[0]
    assert "rabbitmq-server" in lines[0]  # the fix
    assert "Traceback" not in result.stderr
