"""Issue 13 items 0-1: an adapter whose broker user was made by ``crmsync users create
NAME --role adapter`` runs with only those permissions (registers, captures, receives
deliveries), and the broker itself refuses it everything that would reach another
adapter: publishing as another source, writing into another adapter's sink or retry
tiers, binding a queue to crmsync.deliveries."""

from __future__ import annotations

import asyncio
import csv
import uuid
from collections.abc import Iterator
from pathlib import Path

import aio_pika
import aiormq
import prometheus_client as prom
import pytest

from adapters.factory import make_adapter
from adapters.runtime import AdapterRuntime
from router import topology
from router.adapter_config import load_adapter
from router.broker.aio import Connection
from router.config import RouterConfig
from router.daemon import Router
from router.errors import AccessRefused
from router.events import encode_dict
from router.messages import Outgoing
from tests.broker import create_user, delete_user, user_url
from tests.integration.cli_runner import run_cli
from tests.integration.support import collect, depth, event, new_id, poll, register, stop_router

pytestmark = pytest.mark.integration


@pytest.fixture
def name() -> Iterator[str]:
    """The adapter (and its broker user): unique, broker users are not per vhost."""
    made = f"lp{uuid.uuid4().hex[:8]}"
    try:
        yield made
    finally:
        delete_user(made)


def _adapter_toml(tmp_path: Path, name: str, url: str) -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(
        f'name = "{name}"\nkind = "file"\nheartbeat_interval = 1.0\n[broker]\nurl = "{url}"\n'
        f'[state]\npath = "{tmp_path / "state.db"}"\n'
        '[capture]\npoll_interval = 0.2\noverlap = "1s"\n'
        '[retry]\ndelays = ["1s", "2s"]\n'
        f'[entities.contact]\npath = "{tmp_path / "contacts.csv"}"\n'
        '[entities.contact.fields]\nemail = "email"\nfirst_name = "first"\n'
    )
    return path


def _emails(path: Path) -> set[str]:
    with path.open(newline="") as f:
        return {row["email"] for row in csv.DictReader(f)}


async def _refused(connection: Connection, exchange: str, key: str) -> str:
    publisher = await connection.publisher()
    with pytest.raises(AccessRefused) as info:
        await publisher.publish(Outgoing(exchange, key, b"x", user_id=connection.user))
    return str(info.value)


async def test_an_adapter_runs_with_only_its_roles_permissions_and_no_more(
    amqp: str, vhost: str, tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "pw").write_text("s3cret#/?\n")
    (tmp_path / "pw").chmod(0o600)
    made = run_cli(
        "users", "create", name, "--role", "adapter", "--password-file", str(tmp_path / "pw"),
        amqp=amqp,
    )  # fmt: skip
    assert made.code == 0, made.stderr
    hub = f"{name}-router"  # the router on a user of its role too
    made = run_cli(
        "users", "create", hub, "--role", "router", "--password-file", str(tmp_path / "pw"),
        amqp=amqp,
    )  # fmt: skip
    assert made.code == 0, made.stderr
    listed = run_cli("users", "list", "--json", amqp=amqp).json()
    assert {"user": name, "role": "adapter"} in listed

    monkeypatch.delenv("CRMSYNC_AMQP_URL")  # it would win over the adapter's broker.url
    other = create_user(vhost, "other")  # a second adapter, "other", on a user of its own
    (tmp_path / "contacts.csv").write_text("id,email,first\n1,ann@x.io,Ann\n")
    config = RouterConfig.model_validate(
        {
            "broker": {"url": user_url(vhost, hub, "s3cret%23%2F%3F")},
            "state": {"url": f"sqlite:///{tmp_path}/router.db"},
            "security": {"adapter_users": {name: name, "other": other[0]}},
        }
    )
    router = Router(config)
    task = asyncio.create_task(router.run())
    await asyncio.wait_for(router.ready.wait(), 10)
    url = user_url(vhost, name, "s3cret%23%2F%3F")
    adapter_config = load_adapter(_adapter_toml(tmp_path, name, url))
    runtime = AdapterRuntime(adapter_config, make_adapter(adapter_config))
    run = asyncio.create_task(runtime.run())
    mine = Connection(await aio_pika.connect_robust(url))
    theirs = await aio_pika.connect_robust(user_url(vhost, *other))
    try:
        await asyncio.wait_for(runtime.ready.wait(), 15)
        # It captured and published as itself: the router accepted the event.
        assert await poll(lambda: router.stats.verdicts["accepted"] >= 1, 10)
        assert (await register(theirs, "other"))["ok"]
        # ... and a delivery from another adapter reaches its sink and its file.
        ev = event("other", new_id(), {"other": 1}, {"email": "bob@x.io", "first_name": "Bob"})
        channel = await theirs.channel()
        exchange = await channel.get_exchange(topology.CHANGES, ensure=False)
        await exchange.publish(
            aio_pika.Message(encode_dict(ev), user_id=other[0]), "other.contact.upsert"
        )
        assert await poll(lambda: "bob@x.io" in _emails(tmp_path / "contacts.csv"), 10)

        # The broker refuses each way into another adapter, naming user and permission.
        line = await _refused(mine, topology.CHANGES, "other.contact.upsert")
        assert f"user '{name}'" in line and "topic write permission" in line
        assert "routing key 'other.contact.upsert'" in line and "\n" not in line
        line = await _refused(mine, topology.DELIVERIES, "other")
        assert "write permission on exchange 'crmsync.deliveries'" in line
        line = await _refused(mine, "", topology.sink_queue("other"))
        assert "exchange 'amq.default'" in line
        assert "topic write" in await _refused(mine, topology.RETRY, "other.1s")
        assert "topic write" in await _refused(mine, topology.CONTROL, "register.other")
        # Binding its own queue to crmsync.deliveries would read another's deliveries.
        raw = await mine._robust.channel()
        queue = await raw.declare_queue(
            f"crmsync.reply.{name}.{uuid.uuid4().hex[:8]}", exclusive=True
        )
        with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
            await queue.bind(topology.DELIVERIES, "other")
        assert router.stats.verdicts.get("spoofed-source", 0) == 0  # stopped at the broker
        # Its own failure paths stay open: a retry tier and its DLQ, bound by the router.
        publisher = await mine.publisher()
        for key in (topology.retry_key(name, "1s"), topology.dead_key(name)):
            await publisher.publish(Outgoing(topology.RETRY, key, b"x", user_id=name))

        # Item 4: a delivery another user managed to publish into the sink (loose
        # permissions) is not written: it goes to the DLQ, logged and counted.
        forged = event("other", new_id(), {"other": 2}, {"email": "eve@x.io", "first_name": "E"})
        deliveries = await channel.get_exchange(topology.DELIVERIES, ensure=False)
        await deliveries.publish(aio_pika.Message(encode_dict(forged), user_id=other[0]), name)
        # ... while the copy back from its own retry tier is its own: b"x" is judged
        # (undecodable), not refused.
        dlq = topology.dlq_queue(name)

        async def all_parked() -> bool:
            return await depth(theirs, dlq) == 3

        assert await poll(all_parked, 10)
        parked = await collect(await theirs.channel(), dlq, 3)
        kinds = sorted(str(m.headers.get(topology.ERROR_TYPE_HEADER)) for m in parked)
        assert kinds == ["None", "undecodable", "untrusted-sender"]
        assert "eve@x.io" not in _emails(tmp_path / "contacts.csv")
        refused = prom.REGISTRY.get_sample_value(
            "crmsync_adapter_deliveries_refused_total", {"adapter": name}
        )
        assert refused == 1
        refused = run_cli("users", "remove", "guest", amqp=amqp)
        assert refused.code != 0 and "not made by crmsync" in refused.stderr
        assert run_cli("users", "remove", name, amqp=amqp).code == 0
        assert name not in {u["user"] for u in run_cli("users", "list", "--json", amqp=amqp).json()}
    finally:
        runtime.stop()
        await asyncio.wait_for(run, 15)
        await mine.close()
        await theirs.close()
        await stop_router(router, task)
        delete_user(other[0])
        delete_user(hub)


def test_an_adapter_missing_a_permission_stops_with_one_line_naming_it(
    amqp: str, vhost: str, tmp_path: Path, name: str
) -> None:
    """An adapter started on a user made for another name: the broker refuses its
    registration (topic permission on crmsync.control), and the adapter stops with one
    line naming the user, the permission and the resource, exit 3 (no traceback)."""
    assert run_cli("topology", "declare", amqp=amqp).code == 0
    (tmp_path / "pw").write_text("pw\n")
    (tmp_path / "pw").chmod(0o600)
    made = run_cli(
        "users", "create", name, "--role", "adapter", "--password-file", str(tmp_path / "pw"),
        amqp=amqp,
    )  # fmt: skip
    assert made.code == 0, made.stderr
    (tmp_path / "contacts.csv").write_text("id,email,first\n")
    # Its broker user is NAME, but it calls itself NAMEx: register.NAMEx is not its key.
    toml = _adapter_toml(tmp_path, name, user_url(vhost, name, "pw"))
    toml.write_text(toml.read_text().replace(f'name = "{name}"', f'name = "{name}x"', 1))
    result = run_cli("adapter", "--config", str(toml), amqp=None)
    assert result.code == 3, result
    assert "Traceback" not in result.stderr
    [line] = [x for x in result.error_lines if x.startswith("crmsync: error:")]
    assert f"user '{name}'" in line and "topic write permission" in line, line
    assert f"routing key 'register.{name}x'" in line and "pw" not in line.split("'")[1]


def test_an_adapter_before_any_router_says_who_creates_the_hub(amqp: str, tmp_path: Path) -> None:
    """Adapters only check the hub's exchanges: on a vhost where neither the router nor
    `crmsync topology declare` ran, one line says so, exit 3."""
    (tmp_path / "contacts.csv").write_text("id,email,first\n")
    toml = _adapter_toml(tmp_path, "early", amqp)
    result = run_cli("adapter", "--config", str(toml), amqp=None)
    assert result.code == 3, result
    [line] = [x for x in result.error_lines if x.startswith("crmsync: error:")]
    assert f"exchange '{topology.CHANGES}' does not exist" in line
    assert "crmsync topology declare" in line
