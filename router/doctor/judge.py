"""Judging what the probes found: column types, clock skew, topology arguments and
backlogs. Pure functions of plain values, so every verdict is unit-tested."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal

import sqlalchemy as sa

from router import topology
from router.doctor.verdicts import Check, fail, ok, warn

Role = Literal["text", "clock", "flag"]

CLOCK_WARN = 2.0  # seconds of skew worth a look
CLOCK_FAIL = 30.0  # seconds of skew that break last-writer-wins between CRMs


def python_type(type_: sa.types.TypeEngine[Any]) -> type | None:
    try:
        py = type_.python_type
    except NotImplementedError:
        return None
    # An untyped column (SQLite allows them) reflects as NullType, whose type is object.
    return None if py is object else py


def _shown(type_: sa.types.TypeEngine[Any]) -> str:
    try:
        return str(type_.compile())
    except sa.exc.SQLAlchemyError:  # a dialect's own type the generic compiler lacks
        return type(type_).__name__


def column_problem(role: Role, type_: sa.types.TypeEngine[Any]) -> tuple[str, str] | None:
    """(``warn``/``FAIL``, why) when a column of ``type_`` cannot serve as ``role``:
    text fields need a string column, ``updated_at`` a timestamp or a number of seconds,
    ``deleted`` a boolean or an integer flag. None: compatible."""
    py = python_type(type_)
    shown = _shown(type_)
    if py is None:
        return "warn", f"type {shown} unknown to SQLAlchemy, not checked"
    if role == "text":
        if py is str:
            return None
        if py in (int, float, Decimal):
            # Numbers are sent as their text (a deal's amount); worth a look, not broken.
            return "warn", f"is {shown}: its values are sent as text"
        return "FAIL", f"is {shown}, a text field needs a string column"
    if role == "clock":
        if py is datetime or py in (int, float, Decimal):
            return None
        if py is str:
            # Supported (docs: text timestamps), but capture keeps no cursor for them.
            return "warn", f"is {shown}: every poll reads the whole table"
        if py is date:
            return "FAIL", f"is {shown}: a date cannot order changes within a day"
        return "FAIL", f"is {shown}, needs a timestamp or integer column"
    if py in (bool, int):
        return None
    return "FAIL", f"is {shown}, a deleted flag needs a boolean or integer column"


def clock_skew(what: str, skew: float | None, reason: str = "") -> Check:
    """``skew``: seconds this clock is ahead of this host's (negative: behind)."""
    if skew is None:
        return warn(what, f"not compared ({reason})" if reason else "not compared")
    said = f"{abs(skew):.1f} s {'ahead of' if skew >= 0 else 'behind'} this host"
    fix = "synchronise the clocks (NTP/chrony)"
    if abs(skew) > CLOCK_FAIL:
        return fail(what, said, fix)
    if abs(skew) > CLOCK_WARN:
        return warn(what, said, fix)
    return ok(what, said)


def queue_check(spec: topology.QueueSpec, found: Mapping[str, Any] | None) -> Check:
    """``found``: the management API's view of the queue (``arguments``, ``durable``),
    None when it does not exist. A mismatch names the argument, as declare's does."""
    what = f"queue {spec.name}"
    if found is None:
        return fail(what, "missing", _declare_fix(spec.name))
    actual = found.get("arguments") or {}
    for key, expected in spec.arguments.items():
        if key not in actual:
            return fail(what, f"argument {key} missing (expected {expected!r})", _fix(spec))
        if actual[key] != expected:
            return fail(
                what, f"argument {key} is {actual[key]!r}, expected {expected!r}", _fix(spec)
            )
    extra = sorted(set(actual) - set(spec.arguments))
    if extra:
        return fail(what, f"unexpected argument {extra[0]}", _fix(spec))
    if found.get("durable") is False:
        return fail(what, "not durable", _fix(spec))
    return ok(what)


def exchange_check(spec: topology.ExchangeSpec, found: Mapping[str, Any] | None) -> Check:
    what = f"exchange {spec.name}"
    if found is None:
        return fail(what, "missing", "run 'crmsync topology declare' (or start the router)")
    if found.get("type") != spec.kind:
        return fail(
            what,
            f"type is {found.get('type')}, expected {spec.kind}",
            f"delete it (rabbitmqctl delete_exchange {spec.name}) then run "
            "'crmsync topology declare'",
        )
    return ok(what)


def adapter_queues_check(
    adapter: str, specs: list[topology.QueueSpec], found: Mapping[str, Mapping[str, Any]]
) -> list[Check]:
    """One line per queue of ``adapter``; one line in all when none of them exists (an
    adapter never started here, or its queues deleted)."""
    if specs and not any(spec.name in found for spec in specs):
        return [
            fail(
                f"queues of adapter {adapter}",
                f"none of its {len(specs)} queues exists",
                _declare_fix(specs[0].name),
            )
        ]
    return [queue_check(spec, found.get(spec.name)) for spec in specs]


def _declare_fix(queue: str) -> str:
    if queue.startswith(("crmsync.sink.", "crmsync.dlq.", "crmsync.retry.")):
        return "start the adapter, or run 'crmsync topology declare --adapter-config FILE'"
    return "run 'crmsync topology declare' (or start the router)"


def _fix(spec: topology.QueueSpec) -> str:
    return topology.mismatch_fix(spec.name)


def backlog(status: Mapping[str, Any]) -> list[Check]:
    """Dead letters, invalid events and parked conflicts: counted, a warning each (they
    wait for an operator; nothing is broken). ``status``: :func:`router.status.gather_status`."""
    checks: list[Check] = []
    if status["router"]["alive"]:  # only the router knows its parked conflicts
        store = status["router"].get("store") or {}
        parked = int(store.get("conflicts_open") or 0)
        checks.append(
            warn("parked conflicts", f"{parked} open", "crmsync conflicts list")
            if parked
            else ok("parked conflicts", "none")
        )
    for q in status["queues"]:
        name, count = q["name"], q["messages"] or 0
        if name.startswith("crmsync.dlq."):
            checks.append(
                warn(f"dead letters {name}", f"{count} message(s)", "crmsync dlq list")
                if count
                else ok(f"dead letters {name}", "empty")
            )
        elif name == topology.INVALID and count:
            checks.append(warn(f"invalid events {name}", f"{count} message(s)", "crmsync dlq list"))
    return checks
