"""The permissions of each role (router/users.py) and the refusal lines
(router/broker/denials.py): pure, checked here; tests/integration/
test_users_least_privilege.py checks them against RabbitMQ."""

from __future__ import annotations

import re

from router import topology
from router.broker.denials import access_refused, not_found
from router.users import grant, role_of, tag


def _allows(pattern: str, name: str) -> bool:
    return re.search(pattern, name) is not None


def test_an_adapter_may_touch_only_its_own_queues_and_keys() -> None:
    g = grant("adapter", "legacy")
    mine = "crmsync.reply.legacy.0a1b2c"
    assert _allows(g.configure, mine) and _allows(g.configure, "crmsync.requests.legacy.ff")
    for other in ("crmsync.reply.sales.0a1b", "crmsync.sink.legacy", "crmsync.changes"):
        assert not _allows(g.configure, other)
    assert _allows(g.read, topology.sink_queue("legacy"))
    assert not _allows(g.read, topology.sink_queue("sales"))
    for hub in (topology.DELIVERIES, topology.DEAD, "amq.default", topology.sink_queue("sales")):
        assert not _allows(g.write, hub) and not _allows(g.read, hub)
    topics = {t.exchange: t for t in g.topics}
    assert set(topics) == {topology.CHANGES, topology.RETRY, topology.CONTROL}
    assert _allows(topics[topology.CHANGES].write, "legacy.contact.upsert")
    assert not _allows(topics[topology.CHANGES].write, "legacy2.contact.upsert")
    assert _allows(topics[topology.RETRY].write, topology.dead_key("legacy"))
    assert not _allows(topics[topology.RETRY].write, topology.retry_key("sales", "1s"))
    control = topics[topology.CONTROL]
    assert _allows(control.write, "register.legacy") and not _allows(control.write, "op.edit")
    assert not _allows(control.write, "register.sales")
    assert _allows(control.read, topology.reply_route(mine)[1])
    assert not _allows(control.read, "op.#") and not _allows(control.read, "reply.#")


def test_a_name_is_escaped_and_roles_are_tagged() -> None:
    g = grant("adapter", "a-b_c")
    assert _allows(g.read, "crmsync.sink.a-b_c") and not _allows(g.read, "crmsync.sink.aXb_c")
    assert role_of([tag("operator"), "monitoring"]) == "operator"
    assert role_of("administrator") is None


def test_a_resource_refusal_is_one_line_naming_user_resource_and_permission() -> None:
    text = (
        "ACCESS_REFUSED - access to topic 'sales.contact.upsert' in exchange "
        "'crmsync.changes' in vhost 'prod' refused for user 'legacy'"
    )
    line = access_refused(text, "publish to crmsync.changes/sales.contact.upsert")
    assert line is not None and "\n" not in line
    assert "user 'legacy'" in line and "topic write permission" in line and "'prod'" in line
    dlx = "access to exchange 'crmsync.dead' in vhost '/' refused for user 'legacy'"
    assert "write permission on exchange 'crmsync.dead'" in str(
        access_refused(dlx, "declare queue crmsync.sink.legacy")
    )
    own = "access to queue 'crmsync.sink.legacy' in vhost '/' refused for user 'legacy'"
    assert "configure permission" in str(access_refused(own, "declare queue crmsync.sink.legacy"))
    bound = "access to exchange 'crmsync.deliveries' in vhost '/' refused for user 'x'"
    assert "read permission" in str(access_refused(bound, "bind queue q to crmsync.deliveries"))
    assert access_refused("ACCESS_REFUSED - Login was refused", "connect") is None


def test_a_missing_hub_exchange_says_who_creates_it() -> None:
    hub = frozenset(x.name for x in topology.HUB_EXCHANGES)
    line = not_found("NOT_FOUND - no exchange 'crmsync.retry' in vhost '/'", "check", hub)
    assert line is not None and "crmsync topology declare" in line
    assert not_found("NOT_FOUND - no queue 'crmsync.sink.x' in vhost '/'", "consume", hub) is None
