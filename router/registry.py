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
) -> Registration:
    """The registration to store for an adapter that says who it is.

    ``claimed_actor`` is the actor from the adapter's own state, ``None`` when it has none.
    """
    if name in ("hub", "router"):
        raise RegistrationRefused(f"adapter name {name!r} is reserved")
    if claimed_actor is not None and not re.fullmatch(ACTOR_RE, claimed_actor):
        raise RegistrationRefused(f"malformed actor {claimed_actor!r}")
    if claimed_actor is not None and actor_name(claimed_actor) != name:
        raise RegistrationRefused(f"actor {claimed_actor!r} does not belong to adapter {name!r}")
    if claimed_actor is None:
        epoch = existing.epoch + 1 if existing else 1
    else:
        epoch = actor_epoch(claimed_actor)
        if existing and epoch < existing.epoch:
            raise RegistrationRefused(
                f"adapter {name!r} comes back as epoch {epoch} but the registry issued epoch "
                f"{existing.epoch}: its state is older than what it already published "
                "(restored from a backup?). Remove its state file so it gets a fresh epoch."
            )
    registered_at = existing.registered_at if existing else now
    return Registration(name, epoch, entities, sw_version, registered_at, now)


def subscribers(registrations: Mapping[str, Registration], entity: str) -> list[str]:
    """Registered adapters that map ``entity``, in a stable order."""
    return sorted(name for name, reg in registrations.items() if entity in reg.entities)
