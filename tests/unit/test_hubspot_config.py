"""The HubSpot adapter's configuration and property mapping, pure: the shipped TOML and
the worked one in docs/hubspot.md load; properties map to canonical fields through the
entity's transforms both ways, every value sent as text; a bad token file stops the
adapter at start with the key named."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from adapters.canonical import InvalidRecord, validate
from adapters.factory import make_adapter
from adapters.hubspot.mapping import ObjectMapping
from router.adapter_config import AdapterConfig, load_adapter
from router.errors import ConfigError, PermanentWriteError

ROOT = Path(__file__).resolve().parents[2]


def _doc_toml() -> dict[str, object]:
    text = (ROOT / "docs" / "hubspot.md").read_text()
    block = re.search(r"```toml\n(.*?)```", text, re.S)
    assert block is not None
    return tomllib.loads(block.group(1))


def test_shipped_and_documented_configs_load_and_agree() -> None:
    shipped = load_adapter(ROOT / "config" / "adapters" / "hubspot.toml")
    documented = AdapterConfig.model_validate(_doc_toml())
    assert shipped.kind == documented.kind == "hubspot"
    assert shipped.api == documented.api
    assert shipped.entities == documented.entities
    assert shipped.capture == documented.capture
    mapping = ObjectMapping("contact", shipped.entities["contact"])
    assert mapping.field_names == ["email", "first_name", "last_name", "phone"]
    assert {"email", "firstname", "lastmodifieddate", "hs_object_id"} <= set(mapping.properties)


def test_transforms_read_and_write_hubspot_strings() -> None:
    config = AdapterConfig.model_validate(
        {
            "name": "hubspot",
            "kind": "hubspot",
            "api": {"token_file": "unused"},
            "entities": {
                "contact": {
                    "object": "contacts",
                    "fields": {"email": "email", "first_name": "firstname"},
                    "transforms": {
                        "score": {"column": "hubspotscore", "type": "number", "as_string": True},
                        "opted_out": {
                            "column": "hs_email_optout",
                            "type": "bool",
                            "as_string": True,
                        },
                    },
                    "constants": {"hs_lead_status": "NEW"},
                }
            },
        }
    )
    m = ObjectMapping("contact", config.entities["contact"])
    assert m.field_names == ["email", "first_name", "opted_out", "score"]
    read = m.read(
        {"email": "a@x.test", "firstname": None, "hubspotscore": "12.50", "hs_email_optout": "true"}
    )
    assert read == {"email": "a@x.test", "first_name": None, "score": 12.5, "opted_out": True}
    written = m.write({"email": "a@x.test", "first_name": None, "score": 3, "opted_out": False})
    assert written == {
        "email": "a@x.test",
        "firstname": "",  # null clears the property
        "hubspotscore": "3.0",
        "hs_email_optout": "false",
        "hs_lead_status": "NEW",
    }
    assert all(isinstance(v, str) for v in written.values())
    with pytest.raises(PermanentWriteError, match="score"):
        m.write({"score": "lots"})
    bad = m.read({"hubspotscore": "lots"})
    # canonical validation reports the row, naming the field once and never the value
    with pytest.raises(InvalidRecord, match=r"^score: not a number$"):
        validate("contact", bad)


def test_a_bad_token_file_stops_the_adapter_naming_the_key(tmp_path: Path) -> None:
    raw = _doc_toml()
    raw["api"] = {**raw["api"], "token_file": str(tmp_path / "absent")}  # type: ignore[dict-item]
    raw["state"] = {"path": str(tmp_path / "state.db")}
    config = AdapterConfig.model_validate(raw)
    with pytest.raises(ConfigError, match=r"hubspot\.toml: api\.token_file cannot be read"):
        make_adapter(config, where="hubspot.toml")
