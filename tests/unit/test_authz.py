"""router/authz.py: who may publish as which source and make which control request."""

from __future__ import annotations

from router.authz import Principals

P = Principals.of({"legacy": "u-legacy", "sales": "u-sales"}, ["u-ops"], "u-router")


def test_without_adapter_users_nothing_is_checked() -> None:
    open_hub = Principals.of({})
    assert open_hub.event_refusal("sales", "legacy.contact.upsert", None) is None
    assert open_hub.request_refusal("op.adapter-remove", None) is None


def test_an_event_needs_its_sources_user_and_a_matching_routing_key() -> None:
    assert P.event_refusal("legacy", "legacy.contact.upsert", "u-legacy") is None
    # legacy's credentials publishing as sales, in every combination
    assert "belongs to adapter 'legacy', not 'sales'" in str(
        P.event_refusal("sales", "sales.contact.upsert", "u-legacy")
    )
    assert "does not name the body's source" in str(
        P.event_refusal("sales", "legacy.contact.upsert", "u-legacy")
    )
    assert "does not name the body's source" in str(
        P.event_refusal("legacy", "sales.contact.upsert", "u-legacy")
    )
    # an unlisted source, or no user_id at all: refused (the map binds every source)
    assert "belongs to adapter 'legacy'" in str(
        P.event_refusal("mktg", "mktg.contact.upsert", "u-legacy")
    )
    assert "an adapter listed in adapter_users" in str(
        P.event_refusal("mktg", "mktg.contact.upsert", "stranger")
    )
    assert "without user_id" in str(P.event_refusal("legacy", "legacy.contact.upsert", None))
    assert P.event_refusal("legacy", "legacy.contact.upsert", "u-router") is not None


def test_an_operator_may_replay_for_any_source_but_not_with_a_lying_routing_key() -> None:
    assert P.event_refusal("sales", "sales.contact.upsert", "u-ops") is None
    assert P.event_refusal("sales", "legacy.contact.upsert", "u-ops") is not None


def test_adapters_register_and_beat_only_as_themselves() -> None:
    assert P.request_refusal("register.legacy", "u-legacy") is None
    assert P.request_refusal("heartbeat.legacy", "u-legacy") is None
    assert "needs that adapter's user" in str(P.request_refusal("register.sales", "u-legacy"))
    assert P.request_refusal("register.sales", "u-ops") is not None  # not even an operator
    assert P.request_refusal("register.mktg", "u-legacy") is not None


def test_every_operator_request_needs_an_operator() -> None:
    for key in ("op.edit", "op.adapter-remove", "op.conflicts.resolve", "op.status", "op.x"):
        assert P.request_refusal(key, "u-ops") is None
        assert "needs an operator's user" in str(P.request_refusal(key, "u-legacy"))
        assert P.request_refusal(key, None) is not None
