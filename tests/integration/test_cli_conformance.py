"""``crmsync adapter conformance``, run as users run it: one line per failed check, exit 1
when one fails (the kit itself on every kind: test_conformance.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from adapters.kit import CHECKS
from adapters.kit.file_driver import FileDriver
from router.events import Scalar
from tests.integration.cli_runner import Result, run_cli

pytestmark = pytest.mark.integration


class LyingDriver(FileDriver):
    """A driver whose CRM refuses nothing and never goes away: those two checks fail."""

    def refused(self, entity: str) -> dict[str, Scalar]:
        return {}

    @contextmanager
    def outage(self) -> Iterator[None]:
        yield


def _toml(tmp: Path) -> Path:
    (tmp / "export").mkdir()
    path = tmp / "export.toml"
    path.write_text(
        # No [write] rate: the cases above measure it; here it would only take time.
        'name = "export"\nkind = "file"\n'
        f"[entities.contact]\npath = {json.dumps(str(tmp / 'export' / 'contacts.csv'))}\n"
        'fields = { email = "email", first_name = "first", last_name = "last" }\n'
        '[entities.contact.transforms.score]\ntype = "integer"\n'
    )
    return path


def _conformance(*args: str) -> Result:
    root = Path(__file__).resolve().parents[2]
    env = {"PYTHONPATH": str(root)}
    return run_cli("adapter", "conformance", *args, amqp=None, cwd=root, env=env)


def test_command_passes_a_conforming_adapter(tmp_path: Path) -> None:
    result = _conformance(str(_toml(tmp_path)), "--verbose")
    assert result.code == 0, result
    lines = result.stdout.splitlines()
    assert [line.split()[1].rstrip(":") for line in lines[:-1]] == list(CHECKS)
    assert all(line.startswith("ok") for line in lines[:-1])
    assert lines[-1] == f"{len(CHECKS)} of {len(CHECKS)} checks passed"


def test_command_prints_one_line_per_failed_check_and_fails(tmp_path: Path) -> None:
    result = _conformance(str(_toml(tmp_path)), "--driver", f"{__name__}:LyingDriver")
    assert result.code == 1, result
    failed = [line for line in result.stdout.splitlines() if line.startswith("FAIL")]
    assert [line.split()[1] for line in failed] == [
        "refused_is_permanent:",
        "outage_is_transient:",
    ], result.stdout
    assert "was applied, not refused" in failed[0]
    assert result.stdout.splitlines()[-1] == f"{len(CHECKS) - 2} of {len(CHECKS)} checks passed"


def test_command_reports_a_config_it_cannot_load(tmp_path: Path) -> None:
    result = _conformance(str(tmp_path / "missing.toml"))
    assert result.code == 1
    assert result.stdout.splitlines()[0].startswith("FAIL setup: ConfigError: ")
