"""The control plane on the real broker: nonsense gets an error reply, never a crash."""

from __future__ import annotations

from aio_pika.abc import AbstractRobustConnection

from router import control
from router.broker.aio import Connection
from router.broker.rpc import RpcClient
from tests.integration.support import RunningRouter, register


async def test_garbage_and_unknown_requests_get_error_replies_and_the_router_keeps_serving(
    router: RunningRouter, connection: AbstractRobustConnection
) -> None:
    rpc = RpcClient(Connection(connection))
    garbage = await rpc.call_raw("op.status", b"\xc1\x00 definitely not msgpack", timeout=5)
    unknown = await rpc.call("op.conflicts.frobnicate", {"id": "x"}, timeout=5)
    not_a_map = await rpc.call("op.conflicts.list", ["entity"], timeout=5)
    bad_name = await rpc.call("register.NOT_A_NAME", {"entities": {}}, timeout=5)
    assert garbage == {"ok": False, "error": garbage["error"]}
    assert "op.status: the body is not msgpack" in garbage["error"]
    assert unknown["error"] == "unknown control request 'op.conflicts.frobnicate'"
    assert not_a_map["error"] == "op.conflicts.list: the body must be a map, not list"
    assert bad_name["ok"] is False and bad_name["error"].startswith("register.NOT_A_NAME: name")
    assert not router.task.done()
    # Still serving: a well-formed registration and a status request are answered.
    assert (await register(connection, "legacy"))["ok"] is True
    status = await rpc.request(control.StatusRequest(), control.Status, timeout=5)
    assert [a.name for a in status.adapters] == ["legacy"]
    assert router.store.registrations().keys() == {"legacy"}
