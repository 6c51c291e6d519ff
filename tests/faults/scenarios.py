"""The fault scenarios. Each is a function of a :class:`Ctx` that applies its fault to
a system under load and returns once the fault is healed (:mod:`.harness` runs them).
An AssertionError from a scenario fails its row with that message."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import sqlalchemy as sa

from router import topology
from router.events import INT_MAX, encode_dict
from tests.factories import new_id, wire_event
from tests.faults.proxy import Proxy
from tests.faults.workload import (
    FaultSpine,
    Users,
    publish,
    visible_everywhere,
)
from tests.rabbit_node import RabbitNode

ADAPTERS = ("legacy", "sales", "mktg")
HEARTBEAT = 5  # seconds, for the half-open scenario (set through the AMQP URL)


@dataclass
class Ctx:
    spine: FaultSpine
    users: Users
    url: str  # the broker itself (not the proxy)
    node: RabbitNode | None = None
    proxy: Proxy | None = None
    expected_dead: int = 0  # dead-letter entries the scenario itself caused
    notes: list[str] = field(default_factory=list)
    figures: dict[str, float] = field(default_factory=dict)


# -- scenarios --------------------------------------------------------------------------
def broker_kill(ctx: Ctx) -> None:
    """``kill -9`` the broker under flow, then start it again on the same data."""
    assert ctx.node is not None
    ctx.node.kill()
    time.sleep(3)
    ctx.figures["broker start s"] = round(ctx.node.start(), 1)


def broker_restart(ctx: Ctx) -> None:
    """A graceful stop and start of the broker (an upgrade, a host reboot)."""
    assert ctx.node is not None
    code = ctx.node.stop()
    ctx.notes.append(f"broker stop exit {code}")
    ctx.figures["broker start s"] = round(ctx.node.start(), 1)


def close_connections(ctx: Ctx) -> None:
    """``rabbitmqctl close_all_connections`` ten times under load."""
    assert ctx.node is not None
    for _ in range(10):
        ctx.node.close_all_connections()
        time.sleep(1.0)


def half_open(ctx: Ctx) -> None:
    """Every daemon's connection goes silent (no FIN, no RST); each must notice by its
    heartbeat within two heartbeat timeouts, then reconnect once the path heals."""
    assert ctx.proxy is not None
    open_links = ctx.proxy.open_before_silence() or len(ctx.proxy.links)
    ctx.proxy.half_open()
    limit = 2 * HEARTBEAT
    deadline = time.monotonic() + max(limit * 3, 30)
    while len(ctx.proxy.detections()) < open_links and time.monotonic() < deadline:
        time.sleep(0.5)
    seen = ctx.proxy.detections()
    ctx.proxy.heal()
    slowest = max(seen) if seen else math.inf
    ctx.figures["detected"] = len(seen)
    ctx.figures["connections"] = open_links
    ctx.figures["slowest detection s"] = round(slowest, 1)
    if len(seen) < open_links or slowest > limit:
        raise AssertionError(
            f"half-open detected on {len(seen)}/{open_links} connections, slowest "
            f"{slowest:.1f}s (limit two heartbeats = {limit}s)"
        )


def router_kill(ctx: Ctx, times: int = 5) -> None:
    """``kill -9`` the router mid-batch, again and again; a supervisor restarts it."""
    for _ in range(times):
        ctx.spine.fleet.kill("router")
        ctx.spine.restart("router")
        ctx.spine.wait("the router up", lambda: bool(ctx.spine.status()["router"]["alive"]))
        time.sleep(1.0)


def target_outage(ctx: Ctx, seconds: float = 15.0) -> None:
    """sales' database unavailable longer than a poll (0.2 s) and shorter than the retry
    budget: an exclusive transaction holds its SQLite file. Longer than the adapter's
    SQLite busy timeout (10 s), so writes fail and go through the retry tiers (1 s, 5 s;
    each attempt waits out the busy timeout again: about 36 s in all)."""
    db = ctx.spine.dbs["sales"]
    ctx.users.paused.add("sales")
    locker = sa.create_engine(db.url, connect_args={"timeout": 30})
    try:
        with locker.connect() as conn:
            conn.exec_driver_sql("BEGIN EXCLUSIVE")
            time.sleep(seconds)
            conn.exec_driver_sql("ROLLBACK")
    finally:
        locker.dispose()
        ctx.users.paused.discard("sales")


def poison(ctx: Ctx) -> None:
    """Bytes no decoder accepts, into the router's ingress and straight into a sink."""
    publish(ctx.url, b"\xc1\xff not msgpack", "legacy.contact.upsert")
    publish(ctx.url, b"\xc1\xff not msgpack either", topology.sink_queue("sales"), exchange="")
    ctx.expected_dead = 2


def _attack(**values: object) -> bytes:
    return encode_dict(
        wire_event(
            "legacy", new_id(), values.pop("clock", {"legacy": 1}), values.pop("fields"), **values
        )
    )


def attacks(ctx: Ctx) -> None:
    """Hostile clocks, numbers and sizes from a registered source, between user edits;
    the router refuses each to crmsync.router.invalid and the sync carries on."""
    bodies = {
        "clock-from-the-future": _attack(
            clock={"legacy": 1, "sales": INT_MAX}, fields={"email": "atk1@x.io"}
        ),
        "unknown-actor": _attack(clock={"legacy": 1, "ghost": 1}, fields={"email": "atk2@x.io"}),
        "nan": _attack(fields={"email": "atk3@x.io", "first_name": float("nan")}),
        "int over 2^63": _attack(fields={"email": "atk4@x.io", "first_name": 2**63}),
        "too-large": _attack(fields={"email": "atk5@x.io", "first_name": "x" * (1 << 20)}),
    }
    for body in bodies.values():
        publish(ctx.url, body, "legacy.contact.upsert")
        time.sleep(0.3)
    ctx.expected_dead = len(bodies)


def _alarm(
    ctx: Ctx, raise_it: Callable[[], None], clear: Callable[[], None], seconds: float
) -> None:
    """Hold an alarm for ``seconds``; a record written meanwhile must not get through (the
    publishers are blocked) and must arrive once it clears (the harness's probe)."""
    raise_it()
    time.sleep(1.0)
    during = ctx.users.probe()
    time.sleep(seconds)
    blocked = not visible_everywhere(ctx.spine.dbs, during)
    clear()
    ctx.figures["sync blocked during alarm"] = int(blocked)
    if not blocked:
        ctx.notes.append("the alarm did not block the sync")


def memory_alarm(ctx: Ctx, seconds: float = 8.0) -> None:
    assert ctx.node is not None
    node = ctx.node
    _alarm(
        ctx,
        lambda: node.set_vm_memory_high_watermark(0.000001),
        lambda: node.set_vm_memory_high_watermark(0.4),
        seconds,
    )


def disk_alarm(ctx: Ctx, seconds: float = 8.0) -> None:
    assert ctx.node is not None
    node = ctx.node
    _alarm(
        ctx,
        lambda: node.set_disk_free_limit("100000GB"),
        lambda: node.set_disk_free_limit("1MB"),
        seconds,
    )


def sink_deleted(ctx: Ctx) -> None:
    """mktg's sink queue deleted under its consumer (an operator's mistake)."""
    import asyncio

    import aio_pika

    async def go() -> None:
        conn = await aio_pika.connect(ctx.url, timeout=10)
        try:
            channel = await conn.channel()
            await channel.queue_delete(topology.sink_queue("mktg"))
        finally:
            await conn.close()

    asyncio.run(go())
    time.sleep(2)


@dataclass(frozen=True)
class Scenario:
    name: str
    fault: Callable[[Ctx], None]
    own_node: bool = True  # kills, stops or alarms a broker: never the machine's
    proxy: bool = False


SCENARIOS = {
    s.name: s
    for s in (
        Scenario("broker-kill-9", broker_kill),
        Scenario("broker-graceful-restart", broker_restart),
        Scenario("close-all-connections-x10", close_connections),
        Scenario("half-open-connection", half_open, proxy=True),
        Scenario("router-kill-9-x5", router_kill, own_node=False),
        Scenario("target-db-outage", target_outage, own_node=False),
        Scenario("poison-event", poison, own_node=False),
        Scenario("memory-alarm", memory_alarm),
        Scenario("disk-alarm", disk_alarm),
        Scenario("sink-queue-deleted", sink_deleted),
        Scenario("clock-number-size-attacks", attacks, own_node=False),
    )
}
