"""The ``crmsync`` console script, run as a subprocess against the test's vhost.

DESIGN "Commands": every command exits 0 on success and non-zero with one clear line on
error (no traceback for expected errors such as an unreachable broker or a bad config
key); a destructive command without a TTY refuses unless ``--yes`` is given;
``crmsync status`` exits 1 when the router does not answer.

While a router runs in-process on this event loop, the CLI runs through
``asyncio.create_subprocess_exec`` so the loop keeps serving the router.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aio_pika.abc import AbstractRobustConnection

from router import topology
from router.broker.aio import Connection
from router.broker.rpc import RpcClient
from tests.integration.cli_runner import Result, arun_cli, assert_one_clear_line, run_cli
from tests.integration.support import depth, register, start_router, stop_router

pytestmark = pytest.mark.integration

UNREACHABLE = "amqp://guest:guest@127.0.0.1:1/"


def crmsync(*args: str, amqp: str | None, cwd: Path) -> Result:
    return run_cli(*args, amqp=amqp, cwd=cwd)


async def acrmsync(*args: str, amqp: str | None, cwd: Path) -> Result:
    return await arun_cli(*args, amqp=amqp, cwd=cwd)


# -- status ---------------------------------------------------------------------------


def test_status_json_without_a_router_exits_1_and_says_not_alive(amqp: str, tmp_path: Path) -> None:
    result = crmsync("status", "--json", "--timeout", "1", amqp=amqp, cwd=tmp_path)
    assert result.code == 1, result
    assert "Traceback" not in result.stderr
    data = json.loads(result.stdout)
    assert data["router"]["alive"] is False
    assert data["adapters"] == []
    assert data["drained"] is False
    # Queue depths are still reported; this vhost has no topology, so they are unknown.
    queues = {q["name"]: q["messages"] for q in data["queues"]}
    assert queues == {topology.INGRESS: None, topology.INVALID: None, topology.ROUTER_CONTROL: None}


async def test_status_json_with_a_router_lists_adapters_and_queue_depths(
    amqp: str, tmp_path: Path, connection: AbstractRobustConnection
) -> None:
    router, task = await start_router(amqp, tmp_path / "router.db")
    try:
        await register(connection, "legacy")
        await register(connection, "sales", entities={"contact": ["email"], "deal": ["amount"]})
        result = await acrmsync("status", "--json", amqp=amqp, cwd=tmp_path)
        human = await acrmsync("status", amqp=amqp, cwd=tmp_path)
    finally:
        await stop_router(router, task)

    assert result.code == 0, result
    data = json.loads(result.stdout)
    assert data["router"]["alive"] is True
    assert data["router"]["hub_actor"] == "hub"
    assert data["router"]["store"] == {
        "records": 0,
        "inbox": 0,
        "outbox": 0,
        "conflicts_open": 0,
        "identities_parked": 0,
    }
    adapters = {a["name"]: a for a in data["adapters"]}
    assert set(adapters) == {"legacy", "sales"}
    assert adapters["legacy"]["actor"] == "legacy"
    assert adapters["sales"]["entities"] == ["contact", "deal"]
    assert adapters["legacy"]["alive"] is True
    queues = {q["name"]: q for q in data["queues"]}
    for name in (
        topology.INGRESS,
        topology.INVALID,
        topology.ROUTER_CONTROL,
        topology.sink_queue("legacy"),
        topology.sink_queue("sales"),
        topology.dlq_queue("legacy"),
        topology.dlq_queue("sales"),
    ):
        assert name in queues, name
        assert queues[name]["messages"] == 0, name
    assert queues[topology.INGRESS]["consumers"] == 1  # the router
    assert data["drained"] is True
    assert data["attention"] == []

    assert human.code == 0, human
    assert "router up" in human.stdout
    assert "legacy" in human.stdout
    assert "sales" in human.stdout


# -- unreachable broker -----------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("status",),
        ("status", "--json"),
        ("topology", "declare"),
        ("adapter", "remove", "legacy", "--yes"),
    ],
    ids=["status", "status-json", "topology-declare", "adapter-remove"],
)
def test_unreachable_broker_is_one_clear_line(args: tuple[str, ...], tmp_path: Path) -> None:
    result = crmsync(*args, amqp=UNREACHABLE, cwd=tmp_path)
    assert result.code == 3, result  # EXIT_BROKER
    line = assert_one_clear_line(result)
    assert "cannot reach RabbitMQ" in line
    assert "guest:guest" not in result.stderr  # the password is redacted


@pytest.mark.parametrize("args", [("status",), ("dlq", "list", "--adapter", "legacy")])
def test_a_missing_vhost_is_one_line_naming_it_and_the_user(
    args: tuple[str, ...], tmp_path: Path
) -> None:
    """Both clients (aio-pika, pika) see the broker close the connection at open."""
    missing = "amqp://guest:guest@127.0.0.1:5672/crmsync-no-such-vhost"
    result = crmsync(*args, amqp=missing, cwd=tmp_path)
    assert result.code == 3, result
    line = assert_one_clear_line(result)
    assert "refused user 'guest' the vhost 'crmsync-no-such-vhost'" in line, line
    assert "rabbitmqctl add_vhost" in line and "guest:guest" not in result.stderr


def test_router_with_unreachable_broker_is_one_clear_line(tmp_path: Path) -> None:
    config = tmp_path / "router.toml"
    config.write_text(
        f'[broker]\nurl = "{UNREACHABLE}"\n[state]\nurl = "sqlite:///{tmp_path}/router.db"\n'
    )
    result = crmsync("router", "--config", str(config), amqp=None, cwd=tmp_path)
    assert result.code == 3, result
    line = assert_one_clear_line(result)
    assert "cannot reach RabbitMQ" in line


# -- configuration errors ---------------------------------------------------------------


def test_router_with_a_missing_config_names_the_file(tmp_path: Path) -> None:
    result = crmsync("router", "--config", "missing.toml", amqp=None, cwd=tmp_path)
    assert result.code == 4, result  # EXIT_CONFIG
    line = assert_one_clear_line(result)
    assert "missing.toml" in line


def test_router_config_with_an_unknown_key_names_the_key_and_the_file(tmp_path: Path) -> None:
    config = tmp_path / "router.toml"
    config.write_text(
        '[broker]\nurl = "amqp://guest:guest@127.0.0.1:5672/"\n'
        "[router]\nbatch_size = 10\npol_interval = 3\n"
    )
    result = crmsync("router", "--config", str(config), amqp=None, cwd=tmp_path)
    assert result.code == 4, result
    line = assert_one_clear_line(result)
    assert "pol_interval" in line
    assert str(config) in line


def test_config_error_names_a_file_whose_name_has_brackets(tmp_path: Path) -> None:
    """File names are printed verbatim, not read as console markup."""
    result = crmsync("router", "--config", "router[prod].toml", amqp=None, cwd=tmp_path)
    assert result.code == 4, result
    line = assert_one_clear_line(result)
    assert "router[prod].toml" in line


# -- topology -----------------------------------------------------------------------------


async def test_topology_declare_creates_the_hub_queues(
    amqp: str, tmp_path: Path, connection: AbstractRobustConnection
) -> None:
    for _ in range(2):  # idempotent
        result = await acrmsync("topology", "declare", amqp=amqp, cwd=tmp_path)
        assert result.code == 0, result
        assert "topology declared" in result.stdout
    for name in (topology.INGRESS, topology.INVALID, topology.ROUTER_CONTROL):
        assert await depth(connection, name) == 0


# -- adapter remove -------------------------------------------------------------------------


async def test_adapter_remove(
    amqp: str, tmp_path: Path, connection: AbstractRobustConnection
) -> None:
    router, task = await start_router(amqp, tmp_path / "router.db")
    try:
        await register(connection, "legacy")
        await register(connection, "sales")

        unknown = await acrmsync("adapter", "remove", "ghost", "--yes", amqp=amqp, cwd=tmp_path)
        line = assert_one_clear_line(unknown)
        assert "ghost" in line

        # No TTY and no --yes: refuses, and says how to proceed; nothing is removed.
        refused = await acrmsync("adapter", "remove", "legacy", amqp=amqp, cwd=tmp_path)
        line = assert_one_clear_line(refused)
        assert "--yes" in line
        assert set(router.store.registrations()) == {"legacy", "sales"}

        removed = await acrmsync("adapter", "remove", "legacy", "--yes", amqp=amqp, cwd=tmp_path)
        assert removed.code == 0, removed
        assert topology.sink_queue("legacy") in removed.stdout
        assert set(router.store.registrations()) == {"sales"}
        status = await RpcClient(Connection(connection)).call("op.status", {}, timeout=5)
        assert [a["name"] for a in status["adapters"]] == ["sales"]
    finally:
        await stop_router(router, task)
