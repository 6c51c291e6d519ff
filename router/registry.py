"""Adapter registration rules: who may publish, under which actor epoch.

An adapter that comes back without state must never reuse its old counters (a reused
counter makes a real edit look stale and loses it silently), so the registry hands it
the next epoch: ``legacy`` -> ``legacy@2``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from router.clock import actor_epoch, actor_name, make_actor
from router.errors import RegistrationRefused
from router.events import ACTOR_RE


@dataclass(frozen=True)
class Registration:
    name: str
    epoch: int
    entities: dict[str, list[str]]  # entity -> fields the adapter maps
    sw_version: str
    registered_at: float
    last_heartbeat: float

    @property
    def actor(self) -> str:
        return make_actor(self.name, self.epoch)


def register(
    existing: Registration | None,
    name: str,
    claimed_actor: str | None,
    entities: dict[str, list[str]],
    sw_version: str,
    now: float,
    highest: int | None = None,
    highs: Mapping[str, int] | None = None,
) -> Registration:
    """The registration to store for an adapter that says who it is.

    ``claimed_actor`` is the actor from the adapter's own state, ``None`` when it has none;
    ``highest`` the highest counter of that actor in its links (None: not reported);
    ``highs`` the highest counter the router issued or accepted per actor.
    """
    if name in ("hub", "router"):
        raise RegistrationRefused(f"adapter name {name!r} is reserved")
    if claimed_actor is not None and not re.fullmatch(ACTOR_RE, claimed_actor):
        raise RegistrationRefused(f"malformed actor {claimed_actor!r}")
    if claimed_actor is not None and actor_name(claimed_actor) != name:
        raise RegistrationRefused(f"actor {claimed_actor!r} does not belong to adapter {name!r}")
    registered_at = existing.registered_at if existing else now
    if claimed_actor is None or rewound(existing, claimed_actor, highest, highs or {}):
        # A new epoch, so that no counter it counts from here was ever used.
        epoch = max(existing.epoch if existing else 0, _epoch_of(claimed_actor)) + 1
    else:
        epoch = actor_epoch(claimed_actor)
    return Registration(name, epoch, entities, sw_version, registered_at, now)


def _epoch_of(actor: str | None) -> int:
    return actor_epoch(actor) if actor is not None else 0


def rewound(
    existing: Registration | None,
    claimed_actor: str,
    highest: int | None,
    highs: Mapping[str, int],
) -> str | None:
    """Why an adapter's own state is behind what it already published, or None.

    Its state file is older than the registry's epoch (restored from a backup), or the
    links in its CRM's database hold lower counters than the router accepted from it
    (the database was restored). Counting on from there would reuse counters: its next
    edits would look stale and be dropped without a trace.
    """
    epoch = actor_epoch(claimed_actor)
    if existing is not None and epoch < existing.epoch:
        return (
            f"its state names epoch {epoch} but the registry issued epoch {existing.epoch} "
            "(state restored from a backup?)"
        )
    high = highs.get(claimed_actor, 0)
    if highest is not None and highest < high:
        return (
            f"its links' highest counter for {claimed_actor} is {highest} but the router "
            f"accepted {high} (CRM database restored from a backup?)"
        )
    return None


def subscribers(registrations: Mapping[str, Registration], entity: str) -> list[str]:
    """Registered adapters that map ``entity``, in a stable order."""
    return sorted(name for name, reg in registrations.items() if entity in reg.entities)
