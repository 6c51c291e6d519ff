"""Transforms inside the SQL adapter's entity mapping (docs/transforms.md)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from router.adapter_config import EntityMapping
from router.clock import VectorClock, merge
from router.config import _explain
from router.errors import ConfigError, PermanentWriteError
from router.events import new_event_id


def _mapping(**extra: Any) -> EntityMapping:
    return EntityMapping.model_validate({"table": "deals", "fields": {"title": "title"}, **extra})


def _error(**extra: Any) -> str:
    with pytest.raises(ValidationError) as e:
        _mapping(**extra)
    return _explain(e.value, "a.toml")  # type: ignore[arg-type]


def test_entity_mapping_accepts_transforms_names_and_constants() -> None:
    m = _mapping(
        transforms={"stage": {"map": {"W": "won"}}, "active": {"type": "bool"}},
        names={"column": "full_name"},
        constants={"bean_module": "Contacts"},
    )
    assert m.transforms["stage"].map == {"W": "won"}
    assert m.names is not None and m.names.column == "full_name"
    assert m.constants == {"bean_module": "Contacts"}


def test_entity_mapping_without_transforms_is_unchanged() -> None:
    m = _mapping()
    assert m.transforms == {} and m.names is None and m.constants == {}


def test_unknown_transform_key_names_the_key() -> None:
    assert (
        _error(transforms={"stage": {"mapp": {}}}) == "a.toml: unknown key 'transforms.stage.mapp'"
    )


def test_invalid_transform_value_names_the_key() -> None:
    assert "tz" in _error(transforms={"at": {"type": "datetime", "tz": "Mars/Base"}})


def test_two_transforms_on_one_column_are_refused() -> None:
    msg = _error(transforms={"a": {"column": "x"}}, constants={"x": 1})
    assert "CRM column 'x' is used by transforms.a and constants.x" in msg


def test_adapter_toml_with_transforms_loads(tmp_path: Any) -> None:
    from router.adapter_config import load_adapter

    path = tmp_path / "a.toml"
    path.write_text(
        'name = "crm"\n[database]\nurl = "sqlite:///x.db"\n'
        '[entities.deal]\ntable = "deals"\nfields = { title = "title" }\n'
        '[entities.deal.transforms.stage]\nmap = { W = "won" }\n'
    )
    assert load_adapter(path).entities["deal"].transforms["stage"].map == {"W": "won"}
    path.write_text(
        'name = "crm"\n[database]\nurl = "sqlite:///x.db"\n'
        '[entities.deal]\ntable = "deals"\nfields = { title = "title" }\n'
        '[entities.deal.transforms.stage]\nmapp = { W = "won" }\n'
    )
    with pytest.raises(ConfigError, match=r"unknown key 'entities\.deal\.transforms\.stage\.mapp'"):
        load_adapter(path)


# -- the SQL adapter applying them (SQLite, no broker) ---------------------------------

ENTITY = "opportunity"  # no canonical model: the values seen are exactly the transforms'


@pytest.fixture
def crm(tmp_path: Any) -> Any:
    import sqlite3

    from adapters.engine import SyncEngine
    from adapters.sql import SqlAdapter
    from router.adapter_config import AdapterConfig

    db = tmp_path / "crm.db"
    with sqlite3.connect(db) as conn:
        conn.execute(
            "CREATE TABLE opps (id INTEGER PRIMARY KEY, title TEXT, stage TEXT, name TEXT,"
            " active TEXT, met_at TEXT, kind TEXT, updated_at TIMESTAMP)"
        )
        conn.execute(
            "INSERT INTO opps (title, stage, name, active, met_at, updated_at) VALUES"
            " ('T1', 'W', 'Ada King Lovelace', 'Y', '2024-06-01 12:00:00', '2024-01-01 00:00:00')"
        )
    raw = {
        "name": "crm",
        "database": {"url": f"sqlite:///{db}"},
        "state": {"path": str(tmp_path / "state.db")},
        "entities": {
            ENTITY: {
                "table": "opps",
                "fields": {"title": "title", "stage": "stage"},
                "transforms": {
                    "stage": {"map": {"W": "won", "L": "lost"}},
                    "active": {"map": {"Y": "true", "N": "false"}},
                    "met_at": {"type": "datetime", "tz": "Europe/Berlin", "as_string": True},
                },
                "names": {"column": "name"},
                "constants": {"kind": "deal"},
            }
        },
    }
    config = AdapterConfig.model_validate(raw)
    adapter = SqlAdapter(config, where="a.toml")
    engine = SyncEngine(adapter, "crm", overlap=2.0)
    yield db, adapter, engine
    adapter.close()


def _rows(db: Any) -> list[dict[str, Any]]:
    import sqlite3

    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM opps ORDER BY id")]


def _captured(engine: Any) -> tuple[int, list[Any]]:
    from router.events import decode

    before = set(engine.pending())
    result = engine.capture({})
    added = [e for e in engine.pending() if e not in before]
    engine.mark_published(added)
    return result.invalid, [decode(e.body) for e in added]


def test_capture_yields_canonical_values(crm: Any) -> None:
    _db, adapter, engine = crm
    assert adapter.entities()[ENTITY] == [
        "active", "first_name", "last_name", "met_at", "stage", "title"
    ]  # fmt: skip
    invalid, [event] = _captured(engine)
    assert invalid == 0
    assert event.fields == {
        "title": "T1",
        "stage": "won",
        "first_name": "Ada King",
        "last_name": "Lovelace",
        "active": "true",
        "met_at": "2024-06-01T10:00:00+00:00",
    }


def test_delivery_writes_crm_values_and_its_echo_is_not_captured(crm: Any) -> None:
    db, _adapter, engine = crm
    _, [created] = _captured(engine)
    fields = {**created.fields, "stage": "lost", "first_name": "Grace", "last_name": "Hopper"}
    fields["active"], fields["met_at"] = "false", "2024-01-15T08:30:00+00:00"
    event = created.model_copy(
        update={
            "source": "sales",
            "actor": "sales",
            "event_id": new_event_id(),
            "clock": dict(merge(created.vclock, VectorClock({"sales": 1}))),
            "fields": fields,
            "changed": ["active", "first_name", "last_name", "met_at", "stage"],
        }
    )
    assert engine.apply(event).action == "applied"
    [row] = _rows(db)
    assert (row["stage"], row["name"], row["active"]) == ("L", "Grace Hopper", "N")
    assert row["met_at"] == "2024-01-15T09:30:00"  # naive Berlin time
    assert row["kind"] == "deal"
    assert _captured(engine) == (0, [])  # the echo: nothing re-published


def test_value_a_read_transform_cannot_apply_is_a_bad_row(crm: Any) -> None:
    import sqlite3

    db, _adapter, engine = crm
    with sqlite3.connect(db) as conn:
        conn.execute(
            "INSERT INTO opps (title, stage, name, active, updated_at) VALUES"
            " ('T2', 'UNKNOWN', 'Bob', 'Y', '2024-01-01 00:00:01')"
        )
    invalid, events = _captured(engine)
    assert invalid == 1
    assert [e.fields["title"] for e in events] == ["T1"]  # the good row is not held back
    assert len(_rows(db)) == 2  # nothing lost


def test_value_a_write_transform_cannot_apply_is_dead_lettered(crm: Any) -> None:
    db, _adapter, engine = crm
    _, [created] = _captured(engine)
    event = created.model_copy(
        update={
            "source": "sales",
            "actor": "sales",
            "event_id": new_event_id(),
            "clock": dict(merge(created.vclock, VectorClock({"sales": 1}))),
            "fields": {**created.fields, "stage": "pending"},
            "changed": ["stage"],
        }
    )
    with pytest.raises(PermanentWriteError, match="stage"):
        engine.apply(event)
    assert _rows(db)[0]["stage"] == "W"  # unchanged


def test_insert_many_writes_crm_values_and_refuses_a_bad_one(crm: Any) -> None:
    db, adapter, _engine = crm
    good = {"title": "T3", "stage": "won", "first_name": "Alan", "last_name": "Turing"}
    with adapter.transaction() as tx:
        [back] = adapter.insert_many(tx, ENTITY, [("r-3", {**good, "active": "true"})])
    assert back.fields["stage"] == "won" and back.fields["first_name"] == "Alan"
    row = _rows(db)[-1]
    assert (row["stage"], row["name"], row["active"], row["kind"]) == (
        "W",
        "Alan Turing",
        "Y",
        "deal",
    )
    with pytest.raises(PermanentWriteError, match="stage"), adapter.transaction() as tx:
        adapter.insert_many(tx, ENTITY, [("r-4", {**good, "stage": "pending"})])
    assert len(_rows(db)) == 2  # nothing half-written
