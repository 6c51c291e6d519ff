"""Options set through the environment (DESIGN "Commands"): CRMSYNC_CONFIG reaches every
command that reads a config. The file it names does not exist, so each command fails on
reading it, before any broker is needed. The daemons run as a user runs them (a
subprocess: they configure logging); the short commands in process, which is quicker.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from router.cli import app
from router.errors import EXIT_CONFIG, ConfigError
from tests.integration.cli_runner import Result, assert_one_clear_line, run_cli

UNREACHABLE = "amqp://guest:guest@127.0.0.1:1/"  # were a command to connect: exit 3, not 4


def run(*args: str, config: str, cwd: Path) -> Result:
    return run_cli(*args, amqp=UNREACHABLE, cwd=cwd, env={"CRMSYNC_CONFIG": config})


def test_adapter_reads_its_config_from_crmsync_config(tmp_path: Path) -> None:
    result = run("adapter", config="from-env[sales].toml", cwd=tmp_path)
    assert result.code == EXIT_CONFIG, result
    line = assert_one_clear_line(result)
    assert "from-env[sales].toml: no such config file" in line


def test_adapter_config_on_the_command_line_wins_over_the_environment(tmp_path: Path) -> None:
    result = run("adapter", "--config", "given.toml", config="from-env.toml", cwd=tmp_path)
    assert result.code == EXIT_CONFIG, result
    line = assert_one_clear_line(result)
    assert "given.toml" in line and "from-env.toml" not in line


def test_a_router_config_in_the_environment_is_an_adapter_config_error(tmp_path: Path) -> None:
    """One variable for both daemons: a router.toml left in it is an error naming the
    file and what an adapter config lacks, not a silently ignored setting."""
    (tmp_path / "router.toml").write_text("[router]\nbatch_size = 10\n")
    result = run("adapter", config="router.toml", cwd=tmp_path)
    assert result.code == EXIT_CONFIG, result
    line = assert_one_clear_line(result)
    assert "router.toml" in line and "'name'" in line


def test_router_reads_its_config_from_crmsync_config(tmp_path: Path) -> None:
    result = run("router", config="from-env.toml", cwd=tmp_path)
    assert result.code == EXIT_CONFIG, result
    assert "from-env.toml: no such config file" in assert_one_clear_line(result)


@pytest.mark.parametrize(
    "args",
    [
        ("topology", "declare"),
        ("status",),
        ("adapter", "remove", "legacy", "--yes"),
        ("dlq", "list"),
        ("dlq", "show", "some-id"),
        ("dlq", "replay", "--all"),
        ("dlq", "edit", "some-id", "--set", "email=x"),
        ("dlq", "purge", "--all", "--yes"),
        ("dlq", "export"),
        ("conflicts", "list"),
        ("conflicts", "show", "some-id"),
        ("conflicts", "resolve", "some-id", "--take", "sales"),
        ("conflicts", "history", "some-record"),
        ("policy", "check"),
    ],
    ids=" ".join,
)
def test_every_command_reading_a_config_honours_crmsync_config(
    args: tuple[str, ...], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    env = {"CRMSYNC_CONFIG": "from-env.toml", "CRMSYNC_AMQP_URL": UNREACHABLE}
    result = CliRunner().invoke(app, list(args), env=env)
    assert isinstance(result.exception, ConfigError), (result.exception, result.output)
    assert str(result.exception) == "from-env.toml: no such config file"
