"""``crmsync reconcile A B``: find drift between two CRMs, and repair it through the hub.

Drift is what capture cannot see: a value changed without touching ``updated_at``, a row
deleted with the triggers off. The comparison is the one a migration's verification
runs (:mod:`router.compare`, bounded memory). A repair asks the router to send its
current version of each drifted record to both adapters as a repair, which an adapter
writes over whatever its row holds where that differs from what it last applied (so the
clocks, not this command, decide what is newest, and the side that did not drift is not
touched); ``--prefer A`` instead publishes A's rows as new edits, which then reach every
CRM as the newest version. Then it compares again, until the drift is gone or a
deadline passes.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from router import adapter_control as ac
from router import control
from router import control_migration as cm
from router.compare import Tally, merge, tally
from router.migrate import Hub, Say

SETTLE_TIMEOUT = 60.0  # seconds to wait for repairs to show in both CRMs
CHUNK = 1000


@dataclass
class Result:
    a: str
    b: str
    entities: dict[str, Tally] = field(default_factory=dict)
    repaired: dict[str, int] = field(default_factory=dict)

    @property
    def drift(self) -> int:
        return sum(t.drift for t in self.entities.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "equal": self.drift == 0,
            "a": self.a,
            "b": self.b,
            "entities": {
                name: {
                    "compared": t.compared,
                    "equal": t.equal,
                    "missing_in_a": t.missing_in_a,
                    "missing_in_b": t.missing_in_b,
                    "different": t.different,
                    "unmigratable": t.unmigratable,
                    "repaired": self.repaired.get(name, 0),
                    "ids": t.ids,
                }
                for name, t in self.entities.items()
            },
        }


async def compare(
    hub: Hub, a: str, b: str, entity: str, fields: list[str], skip: set[str] | None = None
) -> Tally:
    merged = merge(hub.digests(a, entity, fields), hub.digests(b, entity, fields), skip=skip)
    return await tally(merged, keep_ids=100_000)


async def unmigratable(hub: Hub, entity: str) -> set[str]:
    """Records identity matching parked (ambiguous, a duplicate in its source): no CRM
    should hold them until an operator decides, so they are not drift."""
    parked: control.Identities = await hub.router(
        control.ListIdentities(entity=entity, limit=100_000), control.Identities
    )
    return {str(p["record_id"]) for p in parked.identities}


async def _repair(hub: Hub, a: str, b: str, entity: str, drift: Tally, prefer: str | None) -> int:
    ids = [*drift.ids.get("different", []), *drift.ids.get("missing_in_a", [])]
    ids += drift.ids.get("missing_in_b", [])
    sent = 0
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start : start + CHUNK]
        if prefer is not None:
            reply: ac.Republished = await hub.adapter(
                ac.Republish(name=prefer, entity=entity, record_ids=chunk), ac.Republished
            )
            sent += reply.published
            # What the preferred side lacks still comes from the hub.
            if reply.missing:
                again: cm.Redelivered = await hub.router(
                    cm.Redeliver(entity=entity, record_ids=reply.missing, targets=[a, b]),
                    cm.Redelivered,
                )
                sent += again.sent
        else:
            done: cm.Redelivered = await hub.router(
                cm.Redeliver(entity=entity, record_ids=chunk, targets=[a, b]), cm.Redelivered
            )
            sent += done.sent
    return sent


async def run(
    hub: Hub,
    a: str,
    b: str,
    entities: list[str],
    repair: bool,
    prefer: str | None,
    say: Say,
) -> Result:
    pair: cm.Pair = await hub.router(cm.DescribePair(a=a, b=b), cm.Pair)
    wanted = entities or sorted(pair.fields)
    for entity in wanted:
        if entity not in pair.fields:
            raise_missing(a, b, entity)
    result = Result(a, b)
    for entity in wanted:
        say(f"{entity}: comparing {a} and {b}")
        fields = pair.fields[entity]
        skip = await unmigratable(hub, entity)
        found = await compare(hub, a, b, entity, fields, skip)
        deadline = time.monotonic() + SETTLE_TIMEOUT
        first = True
        while repair and found.drift and time.monotonic() < deadline:
            say(f"{entity}: repairing {found.drift} records through the hub")
            # --prefer publishes the preferred rows once, as edits; every later round
            # (and the plain repair) sends the hub's version, which is then theirs.
            chosen = prefer if first else None
            sent = await _repair(hub, a, b, entity, found, chosen)
            result.repaired[entity] = result.repaired.get(entity, 0) + sent
            first = False
            await asyncio.sleep(1.0)
            found = await compare(hub, a, b, entity, fields, skip)
        result.entities[entity] = found
    return result


def raise_missing(a: str, b: str, entity: str) -> None:
    from router.errors import CrmsyncError

    raise CrmsyncError(f"{a!r} and {b!r} do not both map entity {entity!r}")
