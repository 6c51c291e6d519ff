"""The adapter kit's conformance suite on every shipped adapter kind, as CI runs it.

Each case builds a CRM of its own (a private database, a folder of files) and the
adapter config for it; every check of :data:`adapters.kit.CHECKS` then runs on that
adapter. To add a kind, add one case to :data:`CASES` (hubspot: its fake server from
tests/fakes and ``adapters.kit.DRIVERS["hubspot"]``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from adapters.kit import CHECKS, Subject, open_subject
from adapters.kit.file_driver import FileDriver
from router.adapter_config import AdapterConfig, DatabaseConfig, load_adapter
from router.events import Scalar
from tests.integration import crm_layouts
from tests.integration.cli_runner import Result, run_cli
from tests.integration.crm_layouts import ODOO_DDL, SUITECRM_DDL
from tests.integration.test_sql_servers import UPDATED_AT, private_database

pytestmark = pytest.mark.integration

RATE = "40/s"  # every case holds a [write] rate, so rate_limit measures it


Kit = tuple[AdapterConfig, str | None]  # the config, and the entity to check (None: first)


def _config(kind: str, entity: dict[str, Any], **sections: Any) -> AdapterConfig:
    return AdapterConfig.model_validate(
        {
            "name": f"kit-{kind}",
            "kind": kind,
            "write": {"rate": RATE},
            "entities": {"contact": entity},
            **sections,
        }
    )


@contextmanager
def _sql(backend: str, tmp: Path, soft: bool) -> Iterator[Kit]:
    with private_database(backend, tmp) as url:
        engine = sa.create_engine(url)
        columns: list[sa.schema.SchemaItem] = [
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("email", sa.String(255)),
            sa.Column("fname", sa.String(100)),
            sa.Column("lname", sa.String(100), nullable=False),  # what refused_ sends null
            sa.Column("updated_at", UPDATED_AT, nullable=False),
        ]
        if soft:
            columns.append(sa.Column("is_deleted", sa.Boolean, nullable=False, default=False))
        sa.Table("people", sa.MetaData(), *columns).create(engine)
        engine.dispose()
        entity: dict[str, Any] = {
            "table": "people",
            "fields": {"email": "email", "first_name": "fname", "last_name": "lname"},
        }
        if soft:
            entity["deleted"] = "is_deleted"
        yield _config("sql", entity, database={"url": url}), None


@contextmanager
def _file(fmt: str, tmp: Path, soft: bool) -> Iterator[Kit]:
    folder = tmp / "export"
    folder.mkdir()
    entity: dict[str, Any] = {
        "path": str(folder / f"contacts.{fmt}"),
        "fields": {"email": "email", "first_name": "first", "last_name": "last"},
        # A file takes any text: a typed field is what it can refuse.
        "transforms": {"score": {"type": "integer"}},
    }
    if soft:
        entity["deleted"] = "deleted"
    yield _config("file", entity), None


@contextmanager
def _shipped(name: str, backend: str, ddl: list[str], tmp: Path) -> Iterator[Kit]:
    """A shipped config on its CRM's own table layout, checked on its contacts (related
    email, a reference to the company)."""
    with private_database(backend, tmp) as url:
        engine = sa.create_engine(url)
        crm_layouts.create(engine, ddl)
        engine.dispose()
        shipped = load_adapter(Path(__file__).resolve().parents[2] / "config/adapters" / name)
        yield shipped.model_copy(update={"database": DatabaseConfig(url=url)}), "contact"


Case = Callable[[Path], AbstractContextManager[Kit]]

CASES: dict[str, Case] = {
    "sql-sqlite": lambda tmp: _sql("sqlite", tmp, soft=False),
    "sql-postgresql": lambda tmp: _sql("postgresql", tmp, soft=True),
    "sql-mariadb": lambda tmp: _sql("mariadb", tmp, soft=False),
    "file-csv": lambda tmp: _file("csv", tmp, soft=False),
    "file-jsonl": lambda tmp: _file("jsonl", tmp, soft=True),
    "suitecrm-mariadb": lambda tmp: _shipped("suitecrm.toml", "mariadb", SUITECRM_DDL, tmp),
    "odoo-postgresql": lambda tmp: _shipped("odoo.toml", "postgresql", ODOO_DDL, tmp),
    # "hubspot": lambda tmp: _hubspot(tmp),  (wip/hubspot: the fake server's config)
}


@pytest.fixture(scope="module", params=list(CASES))
def subject(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Subject]:
    tmp = tmp_path_factory.mktemp(request.param)
    with CASES[request.param](tmp) as kit, open_subject(kit[0], tmp / "kit", entity=kit[1]) as s:
        yield s


@pytest.mark.parametrize("check", list(CHECKS))
def test_adapter_conforms(subject: Subject, check: str) -> None:
    CHECKS[check](subject)


# -- the command -------------------------------------------------------------------------


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
