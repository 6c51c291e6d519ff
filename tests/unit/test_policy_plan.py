"""The plan behind ``crmsync policy check`` (router/policy_plan.py): pure, configs in."""

from __future__ import annotations

import io
from typing import Any

import pytest
from rich.console import Console

from router.adapter_config import AdapterConfig
from router.config import RouterConfig
from router.errors import EXIT_CONFIG, ConfigError
from router.policy_plan import build_plan, plan_to_json, render

ORIGIN = "config/router.toml"


def adapter(name: str, *fields: str, entity: str = "contact") -> AdapterConfig:
    return AdapterConfig.model_validate(
        {
            "name": name,
            "database": {"url": f"sqlite:///{name}.db"},
            "entities": {entity: {"table": "t", "fields": {f: f"col_{f}" for f in fields}}},
        }
    )


# The repository's demo shape: mktg has no phone.
ADAPTERS = [
    adapter("legacy", "email", "first_name", "last_name", "phone"),
    adapter("mktg", "email", "first_name", "last_name"),
    adapter("sales", "email", "first_name", "last_name", "phone"),
]


def router(conflicts: dict[str, Any]) -> RouterConfig:
    return RouterConfig.model_validate({"conflicts": conflicts})


def plan_error(cfg: RouterConfig, adapters: list[AdapterConfig]) -> str:
    with pytest.raises(ConfigError) as info:
        build_plan(cfg, adapters, origin=ORIGIN)
    assert info.value.exit_code == EXIT_CONFIG
    message = str(info.value)
    assert "\n" not in message  # the CLI prints it as one line
    assert message.startswith(f"{ORIGIN}: ")
    return message


def test_entity_without_table_uses_lww() -> None:
    plan = build_plan(router({}), ADAPTERS)
    contact = plan["contact"]
    assert (contact.policy, contact.fallback, contact.priority) == ("lww", None, ())
    assert contact.deletes == "update-wins"
    assert not contact.may_park
    assert list(contact.fields) == ["email", "first_name", "last_name", "phone"]
    email = contact.fields["email"]
    assert email.writers == ("legacy", "mktg", "sales")
    assert (email.on_conflict, email.owner) == ("lww", "latest edit")
    assert contact.fields["phone"].writers == ("legacy", "sales")


def test_priority_owner_is_the_top_ranked_writer() -> None:
    cfg = router({"contact": {"policy": "priority", "priority": ["mktg", "legacy", "sales"]}})
    fields = build_plan(cfg, ADAPTERS)["contact"].fields
    assert fields["email"].on_conflict == "priority"
    assert fields["email"].owner == "mktg"
    # mktg does not write phone: the best of its writers owns it.
    assert fields["phone"].owner == "legacy"
    assert "legacy > sales" in fields["phone"].summary


def test_priority_writers_the_list_leaves_out_tie_on_the_latest_edit() -> None:
    cfg = router({"contact": {"policy": "priority", "priority": ["mktg"]}})
    fields = build_plan(cfg, ADAPTERS)["contact"].fields
    assert fields["email"].owner == "mktg"
    assert fields["phone"].owner == "latest edit of legacy, sales"
    assert "(legacy = sales)" in fields["phone"].summary


def test_field_override_beats_the_entity_policy() -> None:
    cfg = router(
        {"contact": {"policy": "lww", "priority": ["sales"], "fields": {"phone": "priority"}}}
    )
    contact = build_plan(cfg, ADAPTERS)["contact"]
    assert (contact.fields["phone"].on_conflict, contact.fields["phone"].owner) == (
        "priority",
        "sales",
    )
    assert contact.fields["email"].on_conflict == "lww"
    assert contact.fallback is None  # only field-merge has one


def test_field_merge_sends_contested_fields_to_the_fallback() -> None:
    cfg = router(
        {
            "contact": {
                "policy": "field-merge",
                "fallback": "manual",
                "priority": ["sales", "legacy", "mktg"],
                "fields": {"phone": "priority", "email": "lww"},
            }
        }
    )
    contact = build_plan(cfg, ADAPTERS)["contact"]
    assert (contact.policy, contact.fallback) == ("field-merge", "manual")
    assert {name: f.on_conflict for name, f in contact.fields.items()} == {
        "email": "lww",
        "first_name": "manual",
        "last_name": "manual",
        "phone": "priority",
    }
    assert contact.fields["first_name"].owner == "operator"
    assert contact.fields["phone"].owner == "sales"
    assert contact.may_park


def test_a_field_only_one_adapter_maps_is_never_contested() -> None:
    adapters = [*ADAPTERS[:2], adapter("sales", "email", "vip")]
    cfg = router({"contact": {"policy": "manual", "fields": {"vip": "manual"}}})
    vip = build_plan(cfg, adapters)["contact"].fields["vip"]
    assert vip.writers == ("sales",)
    assert vip.on_conflict == "none"
    assert vip.owner == "never contested (only sales writes it)"


def test_manual_that_no_two_adapters_can_contest_never_parks() -> None:
    adapters = [adapter("legacy", "email"), adapter("sales", "phone")]
    contact = build_plan(router({"contact": {"policy": "manual"}}), adapters)["contact"]
    assert not contact.may_park


def test_delete_wins_says_a_deleted_outcome_does_not_park() -> None:
    cfg = router({"contact": {"policy": "manual", "deletes": "delete-wins"}})
    contact = build_plan(cfg, ADAPTERS)["contact"]
    assert contact.deletes == "delete-wins"
    assert "nothing parks" in contact.fields["email"].summary


def test_entities_are_the_union_of_the_adapters() -> None:
    adapters = [*ADAPTERS, adapter("erp", "number", entity="invoice")]
    plan = build_plan(router({"invoice": {"policy": "manual"}}), adapters)
    assert list(plan) == ["contact", "invoice"]
    assert plan["contact"].policy == "lww"
    assert plan["invoice"].fields["number"].on_conflict == "none"


def test_json_document_structure() -> None:
    cfg = router({"contact": {"policy": "priority", "priority": ["sales", "legacy"]}})
    doc = plan_to_json(build_plan(cfg, ADAPTERS))
    contact = doc["entities"]["contact"]
    assert set(contact) == {"policy", "fallback", "priority", "deletes", "may_park", "fields"}
    assert contact["priority"] == ("sales", "legacy")
    assert set(contact["fields"]["phone"]) == {"writers", "on_conflict", "owner", "summary"}


def test_render_fits_100_columns() -> None:
    cfg = router(
        {
            "contact": {
                "policy": "field-merge",
                "fallback": "manual",
                "priority": ["sales", "legacy", "mktg"],
                "deletes": "delete-wins",
                "fields": {"phone": "priority", "email": "lww"},
            }
        }
    )
    adapters = [*ADAPTERS, adapter("support", "ticket_priority_level")]
    buffer = io.StringIO()
    render(build_plan(cfg, adapters), Console(file=buffer, width=100, color_system=None))
    text = buffer.getvalue()
    assert max(len(line) for line in text.splitlines()) <= 100
    assert "never contested (only support writes it)" in text  # not cut by the table
    assert "hub > sales > legacy > mktg" in text
    assert "manual: the record is parked" in text


# -- errors ------------------------------------------------------------------------------------


def test_priority_naming_an_unknown_source() -> None:
    cfg = router({"contact": {"policy": "priority", "priority": ["sales", "erp"]}})
    assert plan_error(cfg, ADAPTERS) == (
        f"{ORIGIN}: conflicts.contact.priority names 'erp', which no adapter config has "
        "(known: legacy, mktg, sales)"
    )


def test_override_naming_a_field_no_adapter_maps() -> None:
    cfg = router({"contact": {"fields": {"nickname": "manual"}}})
    assert plan_error(cfg, ADAPTERS) == (
        f"{ORIGIN}: conflicts.contact.fields.nickname names a field no adapter maps for contact "
        "(mapped: email, first_name, last_name, phone)"
    )


def test_table_for_an_entity_no_adapter_maps() -> None:
    cfg = router({"invoice": {"policy": "manual"}})
    assert plan_error(cfg, ADAPTERS) == (
        f"{ORIGIN}: conflicts.invoice is for an entity no adapter config maps (mapped: contact)"
    )


def test_first_error_in_a_fixed_order() -> None:
    cfg = router(
        {
            "order": {"policy": "manual"},
            "contact": {
                "priority": ["zeta", "erp"],
                "fields": {"nickname": "priority"},
            },
        }
    )
    # Entities sorted (contact before order); priority list in its own order.
    assert "priority names 'zeta'" in plan_error(cfg, ADAPTERS)
