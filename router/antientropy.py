"""Anti-entropy's comparison of one adapter with the hub (pure: values in, values out).

Each round compares every adapter with the hub's own record states, not the CRMs with
each other: N comparisons for N CRMs, and a CRM that equals the hub equals every other
CRM that does. The adapter's side is its digest stream (``adapter.<name>.digest``, the
request ``crmsync reconcile`` sends: the hash of the canonical content of the fields it
maps, in record-id order); the hub's side is its records of the entity in record-id
order, each hashed over exactly those fields with the adapter's own hash function
(:func:`router.hashing.content_hash`), so equal content gives equal hashes.

What counts, per record the hub knows and has not parked:

* ``different``: both hold it, with different content;
* ``missing``: the hub holds it (not deleted) and the adapter has no row for it. This
  includes an adapter that joined after the record was made and never had it: the
  backfill anti-entropy exists for;
* ``deleted``: the hub deleted it, the adapter still holds a row;
* ``invalid``: the adapter's row breaks the canonical model (reported, not repaired:
  writing over it could hide an edit capture refused).

A record only the adapter knows (its change not at the hub yet) is none of the hub's
business and is skipped. Drift is acted on only when seen the same way in two rounds in
a row (:class:`Suspects`): a change a CRM made a moment ago and capture has not read yet
looks like drift once, and repairing it would overwrite the user's edit.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

from router.compare import INVALID, Digest
from router.hashing import content_hash
from router.record import RecordState

Kind = Literal["different", "missing", "deleted", "invalid"]
KINDS: tuple[Kind, ...] = ("different", "missing", "deleted", "invalid")
REPAIRABLE: frozenset[str] = frozenset({"different", "missing", "deleted"})
SUSPECTS_LIMIT = 100_000  # drift remembered per adapter and entity between two rounds


@dataclass(frozen=True)
class HubDigest:
    record_id: str
    version: int  # the state's compare-and-set version: changes with every new version
    hash: str | None  # None: deleted in the hub
    parked: bool = False


def hub_digest(state: RecordState, fields: Sequence[str]) -> HubDigest:
    """The hub's record as the adapter would hash it: the adapter's mapped fields only,
    a field the hub never got counting as null (the adapter's column is null then)."""
    picked = {name: state.fields.get(name) for name in fields}
    digest = None if state.deleted else content_hash(picked, False)
    return HubDigest(state.record_id, state.version, digest, state.parked is not None)


@dataclass(frozen=True)
class Found:
    kind: Kind
    record_id: str
    adapter_hash: str | None
    hub_version: int

    @property
    def seen_as(self) -> tuple[str, str | None, int]:
        return (self.kind, self.adapter_hash, self.hub_version)


def judge(adapter: Digest | None, hub: HubDigest | None) -> Found | None:
    """The drift of one record (None: equal); the caller skips what :func:`compared`
    says is not compared."""
    assert hub is not None
    theirs = adapter.hash if adapter is not None else None
    if hub.hash is None:
        return None if theirs is None else Found("deleted", hub.record_id, theirs, hub.version)
    if theirs == INVALID:
        return Found("invalid", hub.record_id, theirs, hub.version)
    if theirs is None:
        return Found("missing", hub.record_id, None, hub.version)
    return None if theirs == hub.hash else Found("different", hub.record_id, theirs, hub.version)


def compared(hub: HubDigest | None) -> bool:
    """Records the hub does not know, or parked for an operator, are not compared."""
    return hub is not None and not hub.parked


async def merge(
    adapter: AsyncIterator[Digest], hub: AsyncIterator[HubDigest]
) -> AsyncIterator[Found | None]:
    """Walk both record-id-ordered streams; one item per compared record (None: equal).
    Holds one page of each side, whatever the number of records."""
    a, h = await anext(adapter, None), await anext(hub, None)
    while a is not None or h is not None:
        if h is None or (a is not None and a.record_id < h.record_id):
            a = await anext(adapter, None)  # only the adapter knows it: skipped
            continue
        if a is None or h.record_id < a.record_id:
            mine: Digest | None = None
            here, h = h, await anext(hub, None)
        else:
            mine, here = a, h
            a, h = await anext(adapter, None), await anext(hub, None)
        if compared(here):
            yield judge(mine, here)


@dataclass
class Suspects:
    """Drift seen last round, by record id: what is seen again the same way (same kind,
    same adapter content, same hub version) is confirmed."""

    limit: int = SUSPECTS_LIMIT
    _last: dict[str, tuple[str, str | None, int]] = field(default_factory=dict)
    _now: dict[str, tuple[str, str | None, int]] = field(default_factory=dict)

    def confirm(self, found: Found) -> bool:
        if len(self._now) < self.limit:
            self._now[found.record_id] = found.seen_as
        return self._last.get(found.record_id) == found.seen_as

    def forget(self, record_id: str) -> None:
        """Repaired: should it still differ next round (the repair not written yet), it
        is a new suspect then, not drift counted (and repaired) twice."""
        self._now.pop(record_id, None)

    def round_done(self) -> None:
        self._last, self._now = self._now, {}


@dataclass
class Tally:
    """One adapter's entity in one round."""

    compared: int = 0
    suspected: int = 0  # drift seen for the first time (confirmed, or not, next round)
    repaired: int = 0
    drift: dict[str, int] = field(default_factory=dict)  # confirmed, by kind

    def add(self, kind: str) -> None:
        self.drift[kind] = self.drift.get(kind, 0) + 1
