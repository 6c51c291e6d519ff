"""``crmsync record show``: one record across the hub and every CRM that maps it.

The router says what the hub holds (values, the clock and author of each, tombstone,
an open conflict); each adapter then says what its CRM holds now, asked in parallel,
so a missing, deleted or locally edited copy shows beside the hub's version. An
adapter that does not answer is shown as such, never waited for longer than its timeout.
"""

from __future__ import annotations

import asyncio
from typing import Any

from router import adapter_control as ac
from router import control
from router.broker.aio import connect
from router.broker.rpc import RpcClient
from router.config import BrokerConfig
from router.errors import CrmsyncError


async def _held(rpc: RpcClient, name: str, record_id: str, timeout: float) -> dict[str, Any]:
    request = ac.WhereIs(name=name, record_id=record_id)
    try:
        reply = await rpc.ask_adapter(request, ac.HeldHere, name, timeout=timeout)
    except CrmsyncError as e:
        return {"answered": False, "error": str(e)}
    return {"answered": True, **reply.model_dump(mode="json", exclude={"ok"})}


async def gather(cfg: BrokerConfig, record_id: str, timeout: float) -> dict[str, Any]:
    connection = await connect(cfg, "crmsync-cli")
    try:
        rpc = RpcClient(connection)
        shown = await rpc.request(
            control.ShowRecord(record_id=record_id), control.RecordShown, timeout=timeout
        )
        held = await asyncio.gather(
            *(_held(rpc, name, record_id, timeout) for name in shown.adapters)
        )
        return {"hub": shown.record, "crms": dict(zip(shown.adapters, held, strict=True))}
    finally:
        await connection.close()


def show(cfg: BrokerConfig, record_id: str, timeout: float = 5.0) -> dict[str, Any]:
    return asyncio.run(gather(cfg, record_id, timeout))


def summary(hub: dict[str, Any], crm: dict[str, Any]) -> str:
    """One CRM's copy in a few words, beside the hub's version."""
    if not crm.get("answered"):
        return "not answering"
    if not crm.get("linked"):
        return "never received it"
    if crm.get("source_record_id") is None:
        return "a tombstone only (never written there)"
    if not crm.get("in_crm"):
        return f"row {crm['source_record_id']} is gone"
    words = [f"row {crm['source_record_id']}"]
    if crm.get("deleted"):
        words.append("deleted")
    if crm.get("differs"):
        words.append("edited there since (capture has not reported it yet)")
    if crm.get("pending"):
        words.append("a local change waits to be published")
    if crm.get("clock") != hub.get("clock") and not crm.get("differs"):
        words.append(f"at clock {crm.get('clock')} (the hub's: {hub.get('clock')})")
    return ", ".join(words)
