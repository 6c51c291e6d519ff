"""The doctor's probes that need no broker, on SQLite files and folders of the test's
own: column types judged on a real reflected table, a missing table or database file
reported (never created), HubSpot token files, file-adapter folders, state stores."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa

from adapters.statefile import StateFile
from router.adapter_config import AdapterConfig
from router.doctor.adapter_probe import adapter_checks
from router.doctor.state_probe import adapter_state_check, router_state_check
from router.doctor.verdicts import Check
from router.state import RouterStore


def _sql(tmp_path: Path, ddl: str | None, **entity: Any) -> tuple[AdapterConfig, Path]:
    db = tmp_path / "crm.db"
    if ddl is not None:
        engine = sa.create_engine(f"sqlite:///{db}")
        with engine.begin() as conn:
            conn.exec_driver_sql(ddl)
        engine.dispose()
    mapping = {"table": "contacts", "fields": {"email": "email", "first_name": "first_name"}}
    raw = {
        "name": "crm",
        "database": {"url": f"sqlite:///{db}"},
        "entities": {"contact": {**mapping, **entity}},
    }
    return AdapterConfig.model_validate(raw), db


def _entity(checks: list[Check]) -> Check:
    return next(c for c in checks if "entities.contact" in c.what)


def test_incompatible_column_types_fail_naming_each_column(tmp_path: Path) -> None:
    cfg, _ = _sql(
        tmp_path,
        "CREATE TABLE contacts (id TEXT PRIMARY KEY, email TEXT, first_name DATETIME, "
        "updated_at DATE, deleted VARCHAR(1))",
        deleted="deleted",
    )
    check = _entity(adapter_checks(cfg, Path("crm.toml")))
    assert check.status == "FAIL"
    assert "column contacts.first_name is DATETIME, a text field needs a string column" in (
        check.detail
    )
    assert "column contacts.updated_at is DATE" in check.detail
    assert "column contacts.deleted is VARCHAR(1), a deleted flag needs" in check.detail
    assert "contacts.email" not in check.detail


def test_a_number_for_a_text_field_or_text_for_updated_at_is_a_warning(tmp_path: Path) -> None:
    cfg, _ = _sql(
        tmp_path,
        "CREATE TABLE contacts (id TEXT PRIMARY KEY, email TEXT, first_name INTEGER, "
        "updated_at TEXT)",
    )
    checks = adapter_checks(cfg, Path("crm.toml"))
    check = _entity(checks)
    assert check.status == "warn", check
    assert "contacts.first_name is INTEGER" in check.detail
    assert "contacts.updated_at is TEXT: every poll reads the whole table" in check.detail
    assert {c.status for c in checks if c is not check} == {"ok"}


def test_a_missing_table_is_named(tmp_path: Path) -> None:
    cfg, _ = _sql(tmp_path, "CREATE TABLE people (id TEXT PRIMARY KEY)")
    check = _entity(adapter_checks(cfg, Path("crm.toml")))
    assert check.status == "FAIL" and check.detail == "database has no table 'contacts'"


def test_a_missing_sqlite_database_is_reported_not_created(tmp_path: Path) -> None:
    cfg, db = _sql(tmp_path, None)
    checks = adapter_checks(cfg, Path("crm.toml"))
    assert len(checks) == 1 and checks[0].status == "FAIL"
    assert f"SQLite file {db} does not exist" in checks[0].detail
    assert not db.exists()


def _api(tmp_path: Path, token: Path) -> AdapterConfig:
    return AdapterConfig.model_validate(
        {
            "name": "hs",
            "kind": "hubspot",
            "api": {"token_file": str(token)},
            "entities": {"contact": {"object": "contacts", "fields": {"email": "email"}}},
        }
    )


def test_a_hubspot_token_file_must_be_readable_and_not_empty(tmp_path: Path) -> None:
    token = tmp_path / "hubspot.token"
    [missing] = adapter_checks(_api(tmp_path, token), Path("hs.toml"))
    assert missing.status == "FAIL" and "No such file" in missing.detail
    token.write_text("\n")
    [empty] = adapter_checks(_api(tmp_path, token), Path("hs.toml"))
    assert empty.status == "FAIL" and "is empty" in empty.detail
    token.write_text("pat-na1-secret\n")
    [good] = adapter_checks(_api(tmp_path, token), Path("hs.toml"))
    assert good.status == "ok"
    assert "pat-na1-secret" not in good.model_dump_json()  # never the token


def test_a_file_adapters_folder_must_exist(tmp_path: Path) -> None:
    def cfg(folder: Path) -> AdapterConfig:
        entity = {"path": str(folder / "contacts.csv"), "fields": {"email": "email"}}
        return AdapterConfig.model_validate(
            {"name": "f", "kind": "file", "entities": {"contact": entity}}
        )

    [gone] = adapter_checks(cfg(tmp_path / "gone"), Path("f.toml"))
    assert gone.status == "FAIL" and "does not exist" in gone.detail
    [there] = adapter_checks(cfg(tmp_path), Path("f.toml"))
    assert there.status == "ok"


def test_state_stores_not_created_yet_are_a_warning_and_not_created(tmp_path: Path) -> None:
    path = tmp_path / "router.db"
    check = router_state_check(f"sqlite:///{path}")
    assert check.status == "warn" and "does not exist yet" in check.detail
    assert not path.exists()
    gone = adapter_state_check("crm", tmp_path / "nowhere" / "crm.state.db")
    assert gone.status == "FAIL" and "not a writable folder" in gone.detail


def test_existing_state_stores_are_readable_and_writable(tmp_path: Path) -> None:
    RouterStore(f"sqlite:///{tmp_path / 'router.db'}").close()
    StateFile(tmp_path / "crm.state.db").close()
    assert router_state_check(f"sqlite:///{tmp_path / 'router.db'}").status == "ok"
    check = adapter_state_check("crm", tmp_path / "crm.state.db")
    assert check.status == "ok" and "readable and writable" in check.detail
    assert StateFile(tmp_path / "crm.state.db").get("crmsync-doctor-probe") is None


def test_a_file_that_is_no_state_store_fails(tmp_path: Path) -> None:
    (tmp_path / "router.db").write_text("not a database")
    check = router_state_check(f"sqlite:///{tmp_path / 'router.db'}")
    assert check.status == "FAIL" and "not a database" in check.detail


def test_a_router_config_that_does_not_load_is_not_replaced_by_the_defaults(
    tmp_path: Path,
) -> None:
    from router.doctor.run import run_checks

    config = tmp_path / "router.toml"
    config.write_text("[broker]\nurl = 5\n")
    checks = run_checks(config, [])
    assert [(c.status, c.what) for c in checks] == [
        ("FAIL", f"config {config}"),
        ("FAIL", "broker"),
    ]
    assert "broker.url" in checks[0].detail
    assert checks[1].detail == f"not checked: {config} did not load"
