"""Running the ``crmsync`` console script as a user does: a subprocess with a clean
environment pointed at the test's own vhost."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Result:
    code: int
    stdout: str
    stderr: str

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]

    def json(self) -> Any:
        assert self.code == 0, self
        return json.loads(self.stdout)


def cli_env(amqp: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRMSYNC_")}
    if amqp is not None:
        env["CRMSYNC_AMQP_URL"] = amqp
    env["COLUMNS"] = "200"
    return env


def run_cli(
    *args: str, amqp: str | None, cwd: Path | None = None, env: dict[str, str] | None = None
) -> Result:
    """Run the CLI when no in-process router has to run meanwhile (this blocks);
    ``env`` adds variables (e.g. ``CRMSYNC_CONFIG``) to the clean environment."""
    proc = subprocess.run(
        [sys.executable, "-m", "router.cli", *args],
        env={**cli_env(amqp), **(env or {})},
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


async def arun_cli(*args: str, amqp: str | None, cwd: Path | None = None) -> Result:
    """Run the CLI without blocking the event loop (an in-process router needs it)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "router.cli",
        *args,
        env=cli_env(amqp),
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return Result(proc.returncode, out.decode(), err.decode())


def assert_one_clear_line(result: Result) -> str:
    """An expected error: non-zero exit, exactly one line on stderr, no traceback."""
    assert result.code != 0, result
    assert "Traceback" not in result.stderr, result.stderr
    assert len(result.error_lines) == 1, f"expected one line on stderr, got:\n{result.stderr}"
    return result.error_lines[0]
