"""``crmsync policy check`` run as a user runs it: a subprocess, no broker needed."""

from __future__ import annotations

from pathlib import Path

from router.errors import EXIT_CONFIG
from tests.integration.cli_runner import Result, assert_one_clear_line, run_cli

REPO = Path(__file__).resolve().parents[2]

ADAPTER = """\
name = "{name}"
[database]
url = "sqlite:///{name}.db"
[entities.contact]
table = "contacts"
[entities.contact.fields]
{fields}
"""

FIELD_MERGE = """\
[conflicts.contact]
policy = "field-merge"
fallback = "lww"
priority = ["sales", "legacy"]
[conflicts.contact.fields]
phone = "priority"
last_name = "manual"
"""


def write_configs(tmp_path: Path, router_toml: str) -> Path:
    """router.toml plus adapters/{legacy,sales}.toml next to it (the default location)."""
    (tmp_path / "adapters").mkdir()
    for name, fields in {
        "legacy": ["email", "last_name", "phone"],
        "sales": ["email", "last_name", "phone", "vip"],
    }.items():
        mapping = "\n".join(f'{f} = "{f}"' for f in fields)
        (tmp_path / "adapters" / f"{name}.toml").write_text(
            ADAPTER.format(name=name, fields=mapping)
        )
    config = tmp_path / "router.toml"
    config.write_text(router_toml)
    return config


def check(*args: str, cwd: Path | None = None) -> Result:
    return run_cli("policy", "check", *args, amqp=None, cwd=cwd)


def test_repository_config_by_default() -> None:
    result = check(cwd=REPO)  # --config defaults to config/router.toml
    assert result.code == 0, result
    assert result.stderr == ""
    assert "contact" in result.stdout
    for name in ("email", "first_name", "last_name", "phone"):
        assert name in result.stdout
    # The shipped HubSpot, SuiteCRM and Odoo configs sit beside the demo's three.
    assert "hubspot, legacy, mktg, odoo, sales, suitecrm" in result.stdout


def test_repository_config_as_json() -> None:
    config = REPO / "config" / "router.toml"
    contact = check("--config", str(config), "--json").json()["entities"]["contact"]
    assert contact["fields"]["phone"]["writers"] == [
        "hubspot",
        "legacy",
        "odoo",
        "sales",
        "suitecrm",
    ]
    assert {"email", "first_name", "last_name", "phone", "company_id"} <= set(contact["fields"])
    assert contact["fields"]["company_id"]["writers"] == ["odoo", "suitecrm"]


def test_field_merge_table(tmp_path: Path) -> None:
    result = check("--config", str(write_configs(tmp_path, FIELD_MERGE)))
    assert result.code == 0, result
    lines = result.stdout.splitlines()
    assert "policy field-merge (fallback lww)" in lines[0]
    assert "may park" in lines[0]
    assert "hub > sales > legacy" in lines[1]
    phone = next(line for line in lines if " phone " in line)
    assert "priority" in phone and "sales" in phone
    vip = next(line for line in lines if " vip " in line)
    assert "never contested (only sales writes it)" in vip


def test_json_structure(tmp_path: Path) -> None:
    config = write_configs(tmp_path, FIELD_MERGE)
    doc = check("--config", str(config), "--json").json()
    contact = doc["entities"]["contact"]
    assert {k: contact[k] for k in ("policy", "fallback", "priority", "deletes", "may_park")} == {
        "policy": "field-merge",
        "fallback": "lww",
        "priority": ["sales", "legacy"],
        "deletes": "update-wins",
        "may_park": True,
    }
    assert contact["fields"]["last_name"] == {
        "writers": ["legacy", "sales"],
        "on_conflict": "manual",
        "owner": "operator",
        "summary": contact["fields"]["last_name"]["summary"],
    }
    assert contact["fields"]["email"]["on_conflict"] == "lww"
    assert contact["fields"]["vip"]["on_conflict"] == "none"


def test_adapters_option_takes_files_and_folders(tmp_path: Path) -> None:
    config = write_configs(tmp_path, "")
    only_legacy = check(
        "--config", str(config), "--adapters", str(tmp_path / "adapters/legacy.toml")
    )
    assert only_legacy.code == 0, only_legacy
    assert "sales" not in only_legacy.stdout
    folder = check("--config", str(config), "--adapters", str(tmp_path / "adapters"), "--json")
    assert set(folder.json()["entities"]["contact"]["fields"]) == {
        "email",
        "last_name",
        "phone",
        "vip",
    }


def test_unknown_source_in_priority_is_one_line_exit_4(tmp_path: Path) -> None:
    config = write_configs(tmp_path, FIELD_MERGE.replace('"legacy"]', '"erp"]'))
    result = check("--config", str(config))
    line = assert_one_clear_line(result)
    assert result.code == EXIT_CONFIG
    assert line.startswith("crmsync: error:")
    assert "'erp'" in line and str(config) in line
    assert result.stdout == ""


def test_unmapped_override_field_is_one_line_exit_4(tmp_path: Path) -> None:
    config = write_configs(tmp_path, FIELD_MERGE + 'nickname = "manual"\n')
    result = check("--config", str(config), "--json")
    line = assert_one_clear_line(result)
    assert result.code == EXIT_CONFIG
    assert "conflicts.contact.fields.nickname" in line


def test_no_adapter_config_is_one_line_exit_4(tmp_path: Path) -> None:
    config = tmp_path / "router.toml"
    config.write_text("")
    result = check("--config", str(config))
    line = assert_one_clear_line(result)
    assert result.code == EXIT_CONFIG
    assert "--adapters" in line
