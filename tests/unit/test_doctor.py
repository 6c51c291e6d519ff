"""The pure parts of ``crmsync doctor``: verdict lines, the exit code, and the judges of
column types, clock skew, topology arguments and backlogs."""

from __future__ import annotations

import json
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql

from router import topology
from router.doctor import judge, verdicts
from router.doctor.broker_probe import management_for
from router.doctor.verdicts import fail, ok, warn


def test_a_line_is_status_what_detail_and_fix_on_one_line() -> None:
    check = fail("queue q", "argument x-overflow missing\n(expected 'reject-publish')", "fix it")
    assert verdicts.line(check) == (
        "FAIL queue q: argument x-overflow missing (expected 'reject-publish'); fix it"
    )
    assert verdicts.line(ok("broker")) == "ok   broker"


def test_exit_code_is_one_only_when_a_check_failed() -> None:
    assert verdicts.exit_code([ok("a"), warn("b", "3 dead letters")]) == 0
    assert verdicts.exit_code([ok("a"), fail("b", "gone")]) == 1
    assert verdicts.exit_code([]) == 0
    data = json.loads(verdicts.as_json([ok("a"), fail("b", "gone", "do x")]))
    assert data["healthy"] is False
    assert data["checks"][1] == {"status": "FAIL", "what": "b", "detail": "gone", "fix": "do x"}
    assert verdicts.summary([ok("a"), warn("b", "w"), fail("c", "f")]) == (
        "unhealthy: 1 ok, 1 warn, 1 failed"
    )


@pytest.mark.parametrize(
    ("role", "type_", "verdict"),
    [
        ("text", sa.String(80), None),
        ("text", sa.Text(), None),
        ("text", mysql.VARCHAR(36), None),
        ("text", sa.Integer(), "warn"),  # sent as its text
        ("text", sa.Numeric(10, 2), "warn"),
        ("text", sa.DateTime(), "FAIL"),
        ("text", sa.Boolean(), "FAIL"),
        ("clock", sa.DateTime(), None),
        ("clock", postgresql.TIMESTAMP(timezone=True), None),
        ("clock", mysql.TIMESTAMP(), None),
        ("clock", sa.BigInteger(), None),
        ("clock", sa.Float(), None),
        ("clock", sa.Text(), "warn"),  # supported, but no cursor: every poll reads all
        ("clock", sa.Date(), "FAIL"),
        ("clock", sa.Boolean(), "FAIL"),
        ("flag", sa.Boolean(), None),
        ("flag", mysql.TINYINT(1), None),
        ("flag", sa.Integer(), None),
        ("flag", sa.String(1), "FAIL"),
        ("flag", sa.DateTime(), "FAIL"),
        ("text", sa.types.NullType(), "warn"),  # untyped SQLite column: not judged
    ],
)
def test_column_types_are_judged_by_role(
    role: judge.Role, type_: sa.types.TypeEngine[Any], verdict: str | None
) -> None:
    problem = judge.column_problem(role, type_)
    assert (problem[0] if problem else None) == verdict


def test_a_wrong_column_type_says_what_it_is_and_what_is_needed() -> None:
    problem = judge.column_problem("text", sa.DateTime())
    assert problem == ("FAIL", "is DATETIME, a text field needs a string column")


@pytest.mark.parametrize(
    ("skew", "status"),
    [(0.0, "ok"), (1.9, "ok"), (-2.5, "warn"), (29.0, "warn"), (31.0, "FAIL"), (-45.0, "FAIL")],
)
def test_clock_skew_warns_above_two_seconds_and_fails_above_thirty(
    skew: float, status: str
) -> None:
    check = judge.clock_skew("clock of x", skew)
    assert check.status == status
    assert ("behind" if skew < 0 else "ahead of") in check.detail


def test_a_clock_not_compared_is_a_warning_that_says_why() -> None:
    check = judge.clock_skew("clock of the broker", None, "management API not usable")
    assert check.status == "warn" and "management API" in check.detail


def _ingress() -> topology.QueueSpec:
    return next(q for q in topology.hub_queues() if q.name == topology.INGRESS)


def test_a_queue_as_declared_passes() -> None:
    spec = _ingress()
    found = {"arguments": dict(spec.arguments), "durable": True}
    assert judge.queue_check(spec, found).status == "ok"


def test_a_queue_argument_changed_or_missing_is_named() -> None:
    spec = _ingress()
    changed = {**spec.arguments, "x-delivery-limit": 5}
    check = judge.queue_check(spec, {"arguments": changed, "durable": True})
    assert check.status == "FAIL"
    assert "x-delivery-limit is 5, expected 200" in check.detail
    assert "stop the adapters" in check.fix  # the ingress's own upgrade path
    missing = {k: v for k, v in spec.arguments.items() if k != "x-overflow"}
    check = judge.queue_check(spec, {"arguments": missing})
    assert check.status == "FAIL" and "x-overflow missing" in check.detail
    extra = {**spec.arguments, "x-max-length": 10}
    assert "x-max-length" in judge.queue_check(spec, {"arguments": extra}).detail
    assert judge.queue_check(spec, None).detail == "missing"


def test_an_exchange_of_another_type_is_named() -> None:
    spec = topology.HUB_EXCHANGES[0]
    assert judge.exchange_check(spec, {"type": spec.kind}).status == "ok"
    check = judge.exchange_check(spec, {"type": "fanout"})
    assert check.status == "FAIL" and f"expected {spec.kind}" in check.detail


def test_an_adapter_with_none_of_its_queues_is_one_line() -> None:
    specs = topology.adapter_queues("sales", [("1s", 1.0)])
    checks = judge.adapter_queues_check("sales", specs, {})
    assert len(checks) == 1 and checks[0].status == "FAIL"
    assert "none of its 3 queues" in checks[0].detail
    found = {s.name: {"arguments": dict(s.arguments)} for s in specs[:2]}
    checks = judge.adapter_queues_check("sales", specs, found)
    assert [c.status for c in checks] == ["ok", "ok", "FAIL"]


def _status(alive: bool, conflicts: int, queues: dict[str, int]) -> dict[str, Any]:
    router = {"alive": alive, "store": {"conflicts_open": conflicts}} if alive else {"alive": False}
    return {"router": router, "queues": [{"name": n, "messages": m} for n, m in queues.items()]}


def test_dead_letters_and_parked_conflicts_are_counted_as_warnings() -> None:
    checks = judge.backlog(
        _status(True, 2, {"crmsync.dlq.sales": 3, "crmsync.dlq.legacy": 0, topology.INVALID: 1})
    )
    by_what = {c.what: c for c in checks}
    assert (
        by_what["parked conflicts"].status == "warn"
        and "2 open" in by_what["parked conflicts"].detail
    )
    assert by_what["dead letters crmsync.dlq.sales"].status == "warn"
    assert "3 message(s)" in by_what["dead letters crmsync.dlq.sales"].detail
    assert by_what["dead letters crmsync.dlq.legacy"].status == "ok"
    assert by_what[f"invalid events {topology.INVALID}"].status == "warn"
    assert verdicts.exit_code(checks) == 0


def test_without_the_router_parked_conflicts_are_not_claimed() -> None:
    assert judge.backlog(_status(False, 0, {topology.INGRESS: 0})) == []


def test_the_management_api_is_found_beside_the_broker_with_its_login() -> None:
    m = management_for("amqps://ops:p%23ss@rabbit.example:5671/crm%2Fprod", None)
    assert (m.base, m.user, m.password, m.vhost) == (
        "https://rabbit.example:15672",
        "ops",
        "p#ss",
        "crm/prod",
    )
    assert m.path("queues", "crmsync.sink.a") == (
        "https://rabbit.example:15672/api/queues/crm%2Fprod/crmsync.sink.a"
    )
    d = management_for("amqp://127.0.0.1:5672", "http://mgmt:8080/")
    assert (d.base, d.user, d.vhost) == ("http://mgmt:8080", "guest", "/")
