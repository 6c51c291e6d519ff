"""Transforms inside the SQL adapter's entity mapping (docs/transforms.md)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from router.config import EntityMapping, _explain
from router.errors import ConfigError


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
    from router.config import load_adapter

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


def test_sql_adapter_refuses_transforms_it_does_not_apply_yet(tmp_path: Any) -> None:
    import sqlite3

    from adapters.sql import SqlAdapter
    from router.config import AdapterConfig

    db = tmp_path / "crm.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE deals (id INTEGER PRIMARY KEY, title TEXT, updated_at TEXT)")
    entity = {"table": "deals", "fields": {"title": "title"}}
    raw: dict[str, Any] = {"name": "crm", "database": {"url": f"sqlite:///{db}"}}
    SqlAdapter(AdapterConfig.model_validate({**raw, "entities": {"deal": entity}})).close()
    with_map = {**entity, "transforms": {"stage": {"map": {"W": "won"}}}}
    config = AdapterConfig.model_validate({**raw, "entities": {"deal": with_map}})
    with pytest.raises(ConfigError, match=r"entities\.deal: transforms.*not applied"):
        SqlAdapter(config, where="a.toml")
