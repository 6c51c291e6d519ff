"""The adapter TOML's kind sections and write rates (router/adapter_config.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from router.adapter_config import AdapterConfig, load_adapter, parse_rate
from router.errors import ConfigError


def _config(**extra: Any) -> dict[str, Any]:
    entity = extra.pop("entity", {"table": "contacts"})
    return {
        "name": "crm",
        "database": {"url": "sqlite:///x.db"},
        "entities": {"contact": {"fields": {"email": "email"}, **entity}},
        **extra,
    }


def _error(tmp_path: Path, text: str) -> str:
    path = tmp_path / "a.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_adapter(path)
    return str(info.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("100/10s", (100.0, 10.0)),
        ("5/s", (5.0, 1.0)),
        ("250000/d", (250000.0, 86400.0)),
        (" 3 / 2m ", (3.0, 120.0)),
        ("1.5/500ms", (1.5, 0.5)),
    ],
)
def test_parse_rate(text: str, expected: tuple[float, float]) -> None:
    assert parse_rate(text) == expected


@pytest.mark.parametrize("text", ["100", "0/s", "x/s", "10/0s", "10/10y", ""])
def test_parse_rate_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="not a rate"):
        parse_rate(text)


def test_write_rate_is_the_lower_of_both() -> None:
    assert AdapterConfig.model_validate(_config()).write_rate() is None
    cfg = AdapterConfig.model_validate(_config(write={"rate": "100/10s"}))
    assert cfg.write_rate() == 10.0
    both = AdapterConfig.model_validate(_config(write={"rate": "100/10s"}, sink={"max_rate": 4}))
    assert both.write_rate() == 4.0


def test_bad_write_rate_names_the_key(tmp_path: Path) -> None:
    text = (
        'name = "crm"\n[database]\nurl = "sqlite:///x.db"\n[write]\nrate = "lots"\n'
        '[entities.contact]\ntable = "c"\nfields = { email = "email" }\n'
    )
    assert "key 'write.rate'" in _error(tmp_path, text)


def test_sql_needs_a_database_and_tables() -> None:
    with pytest.raises(ValueError, match=r'"sql" needs \[database\] url'):
        AdapterConfig.model_validate({**_config(), "database": None})
    with pytest.raises(ValueError, match=r"entities\.contact\.table is missing"):
        AdapterConfig.model_validate(_config(entity={}))
    with pytest.raises(ValueError, match=r"entities\.contact\.object does not apply"):
        AdapterConfig.model_validate(_config(entity={"table": "c", "object": "contacts"}))


def test_hubspot_needs_api_and_objects(tmp_path: Path) -> None:
    base = {"name": "hs", "kind": "hubspot", "entities": {"contact": {"fields": {"e": "email"}}}}
    with pytest.raises(ValueError, match=r"needs \[api\] token_file"):
        AdapterConfig.model_validate(base)
    api = {"token_file": str(tmp_path / "token")}
    with pytest.raises(ValueError, match=r"entities\.contact\.object is missing"):
        AdapterConfig.model_validate({**base, "api": api})
    ok = AdapterConfig.model_validate(
        {**base, "api": api, "entities": {"contact": {"object": "contacts", "fields": {"e": "e"}}}}
    )
    assert ok.api is not None and ok.api.base_url == "https://api.hubapi.com"
    # Links live in a SQLite file beside the state file when [database] is absent.
    assert ok.links_url == "sqlite:///state/hs.links.db"


def test_api_belongs_to_hubspot_only(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\[api\] applies to kind"):
        AdapterConfig.model_validate(_config(api={"token_file": str(tmp_path / "t")}))


def test_file_entities_and_format() -> None:
    cfg = AdapterConfig.model_validate(
        {
            "name": "export",
            "kind": "file",
            "entities": {
                "contact": {"path": "out/contacts.CSV", "fields": {"email": "email"}},
                "company": {"path": "out/companies.ndjson", "fields": {"name": "name"}},
            },
        }
    )
    assert cfg.entities["contact"].file_format() == "csv"
    assert cfg.entities["company"].file_format() == "jsonl"
    with pytest.raises(ValueError, match=r"capture\.push applies"):
        AdapterConfig.model_validate(
            {
                "name": "f",
                "kind": "file",
                "capture": {"push": True},
                "entities": {"c": {"path": "c.csv", "fields": {"e": "e"}}},
            }
        )


def _suite_like(**contact: Any) -> dict[str, Any]:
    return {
        "name": "crm",
        "database": {"url": "sqlite:///x.db"},
        "entities": {
            "company": {"table": "accounts", "fields": {"name": "name"}},
            "contact": {"table": "contacts", "fields": {"first_name": "first_name"}, **contact},
        },
    }


LINK = {"table": "rel", "record": "bean_id", "other": "email_id"}


def test_related_and_references_validate_with_their_keys(tmp_path: Path) -> None:
    ok = AdapterConfig.model_validate(
        _suite_like(
            related={"email": {"table": "emails", "column": "address", "link": LINK}},
            references={"company_id": {"entity": "company", "column": "account_id"}},
        )
    )
    assert ok.entities["contact"].field_names() == ["company_id", "email", "first_name"]
    with pytest.raises(ValueError, match=r"'nobody' is not an entity of this adapter"):
        AdapterConfig.model_validate(
            _suite_like(references={"company_id": {"entity": "nobody", "column": "x"}})
        )
    with pytest.raises(ValueError, match="give either column or link"):
        AdapterConfig.model_validate(_suite_like(references={"company_id": {"entity": "company"}}))
    with pytest.raises(ValueError, match="match must be the column or one of the derived"):
        AdapterConfig.model_validate(
            _suite_like(
                related={"email": {"table": "e", "column": "a", "match": "b", "link": LINK}}
            )
        )
    with pytest.raises(ValueError, match="both a column and a related"):
        AdapterConfig.model_validate(
            _suite_like(related={"first_name": {"table": "e", "column": "a", "link": LINK}})
        )
    text = (
        'name = "crm"\n[database]\nurl = "sqlite:///x.db"\n'
        '[entities.contact]\ntable = "c"\nfields = { e = "e" }\n'
        '[entities.contact.related.email]\ntable = "emails"\ncolumn = "a"\n'
        '[entities.contact.related.email.link]\ntable = "rel"\nrecord = "b"\n'
    )
    assert "missing key 'entities.contact.related.email.link.other'" in _error(tmp_path, text)


def test_related_keys_belong_to_sql() -> None:
    raw = _suite_like(filter={"is_company": False})
    raw.update(kind="file")
    for entity in raw["entities"].values():
        entity["path"] = entity.pop("table") + ".csv"
    with pytest.raises(ValueError, match=r"related, references and filter apply to kind"):
        AdapterConfig.model_validate(raw)


def test_a_plugin_names_its_class_and_only_a_plugin_has_options() -> None:
    entity = {"contact": {"object": "people", "fields": {"email": "email"}}}
    base = {"name": "tiny", "kind": "plugin", "entities": entity}
    with pytest.raises(ValueError, match=r'kind = "plugin" and plugin = "module:Class"'):
        AdapterConfig.model_validate(base)
    with pytest.raises(ValueError, match="plugin"):
        AdapterConfig.model_validate({**base, "plugin": "not a class path"})
    ok = AdapterConfig.model_validate({**base, "plugin": "pkg.mod:Cls", "options": {"x": 1}})
    assert ok.options == {"x": 1} and ok.links_url.endswith("tiny.links.db")
    with pytest.raises(ValueError, match=r'\[options\] applies to kind = "plugin"'):
        AdapterConfig.model_validate(_config(options={"x": 1}))
