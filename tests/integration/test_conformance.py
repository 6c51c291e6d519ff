"""The adapter kit's conformance suite on every shipped adapter kind, as CI runs it.

Each case builds a CRM of its own (a private database, a folder of files) and the
adapter config for it; every check of :data:`adapters.kit.CHECKS` then runs on that
adapter. To add a kind, add one case to :data:`CASES` (hubspot: its fake server from
tests/fakes, and a driver: ``adapters.kit.DRIVERS["hubspot"]``, or a factory bound to
the fake server passed to ``open_subject(..., driver=factory)``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from adapters.kit import CHECKS, Subject, open_subject
from router.adapter_config import AdapterConfig, DatabaseConfig, load_adapter
from tests.integration import crm_layouts, kit_cases
from tests.integration.crm_layouts import ODOO_DDL, SUITECRM_DDL
from tests.integration.kit_cases import Kit
from tests.integration.test_sql_servers import UPDATED_AT, private_database

pytestmark = pytest.mark.integration

RATE = "40/s"  # every case holds a [write] rate, so rate_limit measures it


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
        yield Kit(_config("sql", entity, database={"url": url}))


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
    yield Kit(_config("file", entity))


@contextmanager
def _shipped(name: str, backend: str, ddl: list[str], tmp: Path) -> Iterator[Kit]:
    """A shipped config on its CRM's own table layout, checked on its contacts (related
    email, a reference to the company)."""
    with private_database(backend, tmp) as url:
        engine = sa.create_engine(url)
        crm_layouts.create(engine, ddl)
        engine.dispose()
        shipped = load_adapter(Path(__file__).resolve().parents[2] / "config/adapters" / name)
        yield Kit(shipped.model_copy(update={"database": DatabaseConfig(url=url)}), "contact")


Case = Callable[[Path], AbstractContextManager[Kit]]

CASES: dict[str, Case] = {
    "sql-sqlite": lambda tmp: _sql("sqlite", tmp, soft=False),
    "sql-postgresql": lambda tmp: _sql("postgresql", tmp, soft=True),
    "sql-mariadb": lambda tmp: _sql("mariadb", tmp, soft=False),
    "file-csv": lambda tmp: _file("csv", tmp, soft=False),
    "file-jsonl": lambda tmp: _file("jsonl", tmp, soft=True),
    "suitecrm-mariadb": lambda tmp: _shipped("suitecrm.toml", "mariadb", SUITECRM_DDL, tmp),
    "odoo-postgresql": lambda tmp: _shipped("odoo.toml", "postgresql", ODOO_DDL, tmp),
    "hubspot": lambda tmp: kit_cases.hubspot(tmp, RATE),
    "plugin-tinycrm": lambda tmp: kit_cases.tinycrm(tmp, RATE),
}


@pytest.fixture(scope="module", params=list(CASES))
def subject(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Subject]:
    tmp = tmp_path_factory.mktemp(request.param)
    with (
        CASES[request.param](tmp) as kit,
        open_subject(kit.config, tmp / "kit", kit.driver, kit.entity) as s,
    ):
        yield s


@pytest.mark.parametrize("check", list(CHECKS))
def test_adapter_conforms(subject: Subject, check: str) -> None:
    CHECKS[check](subject)
