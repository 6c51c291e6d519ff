"""Identity matching inside one batch: before ``decide``, each event's record id is
rewritten to the record it is an alias of, linked to an existing record, or parked
(docs/identity.md). The rules are :func:`router.identity.match`; this is their I/O.

Everything a batch needs is read in a few queries up front (its aliases, its parked
events, the index entries of its keys, the members of the records involved); what the
batch itself stores is kept in a batch-local index, so two new records with one key in
one batch are matched against each other too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Container, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from sqlalchemy.engine import Connection

from router import topology
from router.clock import Order, compare
from router.events import ChangeEvent, decode
from router.identity import (
    AMBIGUOUS,
    DUPLICATE,
    Alias,
    IdentityOutcome,
    IdentityWrites,
    Member,
    ParkedIdentity,
    key_values,
    match,
)
from router.logs import kv
from router.messages import Outgoing
from router.record import RecordState
from router.state import RouterStore

log = logging.getLogger("crmsync.router")
ALIASES_HEADER = topology.ALIASES_HEADER
VERDICTS = {AMBIGUOUS: "ambiguous", DUPLICATE: "duplicate-in-source"}

Triple = tuple[str, str, str]  # (entity, key, indexed value)


@dataclass(frozen=True)
class Routed:
    """What to decide (``event``, its record id rewritten when it is an alias), or None
    when identity matching parked it (``verdict``, ``outcome``)."""

    event: ChangeEvent | None
    verdict: str | None = None
    outcome: IdentityOutcome | None = None


@dataclass
class IdentityStep:
    store: RouterStore
    unmatched: Container[str] = frozenset()  # record ids an operator said are new
    aliases: dict[str, Alias] = field(default_factory=dict)
    parked: dict[str, ParkedIdentity] = field(default_factory=dict)  # by record id
    found: dict[Triple, set[str]] = field(default_factory=dict)  # the stored index
    members: dict[str, set[Member]] = field(default_factory=dict)
    local: dict[str, set[Triple]] = field(default_factory=dict)  # this batch's states
    writes: IdentityWrites = field(default_factory=IdentityWrites)
    keyed: set[str] = field(default_factory=set)  # record ids of entities with keys

    @classmethod
    def prepare(
        cls,
        store: RouterStore,
        events: Sequence[ChangeEvent],
        conn: Connection,
        unmatched: Container[str] = frozenset(),
    ) -> IdentityStep | None:
        """The step for a batch (None when none of its entities has match keys), its
        aliases loaded: :meth:`record_ids` says which states to load then."""
        mine = [e for e in events if e.entity in store.match_keys]
        if not mine:
            return None
        step = cls(store, unmatched)
        step.aliases = store.load_aliases((e.record_id for e in mine), conn)
        return step

    def record_ids(self, events: Iterable[ChangeEvent]) -> set[str]:
        """The records the batch's events are about, aliases resolved."""
        return {self._target(e.record_id) for e in events}

    def _target(self, record_id: str) -> str:
        alias = self.aliases.get(record_id)
        return alias.record_id if alias else record_id

    def look_up(
        self, events: Sequence[ChangeEvent], states: dict[str, RecordState], conn: Connection
    ) -> None:
        """Read the parked events, index entries, members and the states of the
        records a new id may link to (added to ``states``) that the batch may need."""
        keys = self.store.match_keys
        unseen = [
            e
            for e in events
            if e.entity in keys and e.record_id not in self.aliases and e.record_id not in states
        ]
        self.parked = self.store.parked_by_record((e.record_id for e in unseen), conn)
        wanted = {
            (e.entity, key, value)
            for e in unseen
            if e.op == "upsert"
            for key, value in key_values(e.fields, keys[e.entity])
        }
        self.found = self.store.match_candidates(wanted, conn) if wanted else {}
        self.keyed = {self._target(e.record_id) for e in events if e.entity in keys}
        candidates = {r for ids in self.found.values() for r in ids}
        # A link is decided against the record it links to: its state is needed too.
        states.update(self.store.load(candidates - set(states), conn))
        involved = self.keyed | candidates
        loaded = self.store.members_of(involved, conn)
        self.members = {r: set(ms) for r, ms in loaded.items()}

    def route(self, event: ChangeEvent, body: bytes, states: dict[str, RecordState]) -> Routed:
        """The event to decide, its record id rewritten to the record it stands for; or
        parked (and the later version of an event parked before replaces it)."""
        keys = self.store.match_keys.get(event.entity)
        alias = self.aliases.get(event.record_id)
        if alias is not None:
            return Routed(event.model_copy(update={"record_id": alias.record_id}))
        if not keys or event.record_id in states or event.record_id in self.unmatched:
            return Routed(event)
        held = self.parked.get(event.record_id)
        if held is not None:
            return self._park_again(event, body, held)
        if event.op != "upsert":
            return Routed(event)
        found = match(
            event.fields,
            keys,
            self._candidates(event.entity, keys, event),
            self.members,
            event.source,
            event.source_record_id,
        )
        if found.kind == "new":
            return Routed(event)
        if found.kind == "alias":
            assert found.record_id is not None
            alias = Alias(
                event.record_id,
                found.record_id,
                event.entity,
                event.source,
                event.source_record_id,
                time.time(),
            )
            self.aliases[alias.alias_id] = alias
            self.writes.aliases.append(alias)
            _log("record linked to an existing one", event, found.key, found.record_id)
            outcome = IdentityOutcome("linked", found.record_id, found.candidates, found.key)
            return Routed(event.model_copy(update={"record_id": found.record_id}), None, outcome)
        reason = AMBIGUOUS if found.kind == "ambiguous" else DUPLICATE
        outcome = IdentityOutcome(_kind(reason), found.record_id, found.candidates, found.key)
        self._park(event, body, reason, found.candidates)
        _log("record parked by identity matching", event, found.key, found.record_id, reason)
        return Routed(None, VERDICTS[reason], outcome)

    def _candidates(
        self, entity: str, keys: Sequence[str], event: ChangeEvent
    ) -> dict[tuple[str, str], Collection[str]]:
        """Per (key, value) of the event, the live records holding it now: the stored
        index, overridden by what this batch stored for its records."""
        found: dict[tuple[str, str], Collection[str]] = {}
        for key, value in key_values(event.fields, keys):
            triple = (entity, key, value)
            ids = {r for r in self.found.get(triple, ()) if r not in self.local}
            ids |= {r for r, triples in self.local.items() if triple in triples}
            if ids:
                found[(key, value)] = ids
        return found

    def _park(
        self, event: ChangeEvent, body: bytes, reason: str, candidates: tuple[str, ...]
    ) -> None:
        item = ParkedIdentity(
            event.event_id,
            event.record_id,
            event.entity,
            event.source,
            event.source_record_id,
            reason,
            candidates,
            body,
            time.time(),
        )
        self.parked[event.record_id] = item
        self.writes.parked = [p for p in self.writes.parked if p.record_id != event.record_id]
        self.writes.parked.append(item)

    def _park_again(self, event: ChangeEvent, body: bytes, held: ParkedIdentity) -> Routed:
        record_id = held.candidates[0] if held.reason == DUPLICATE else None
        outcome = IdentityOutcome(_kind(held.reason), record_id, held.candidates)
        if compare(event.vclock, decode(held.body).vclock) is Order.AFTER:
            self._park(event, body, held.reason, held.candidates)
        return Routed(None, VERDICTS[held.reason], outcome)

    def stored(self, event: ChangeEvent, state: RecordState) -> None:
        """A state this batch stores: it joins the batch-local index, and the row the
        event came from becomes a member of the record."""
        keys = self.store.match_keys.get(state.entity)
        if not keys:
            return
        self.keyed.add(state.record_id)
        self.local[state.record_id] = (
            set()
            if state.deleted
            else {(state.entity, k, v) for k, v in key_values(state.fields, keys)}
        )
        if event.source == "hub" or not event.source_record_id:
            return
        member = Member(state.record_id, event.source, event.source_record_id)
        known = self.members.setdefault(state.record_id, set())
        if member not in known:
            known.add(member)
            self.writes.members.append(member)

    def add_headers(self, deliveries: Sequence[Outgoing], conn: Connection) -> None:
        """Each delivery of a record with aliases names them, per adapter, so an adapter
        whose row is known under an alias re-keys its link (adapters.engine)."""
        ids = {
            str(d.headers.get(topology.RECORD_KEY_HEADER))
            for d in deliveries
            if d.headers.get(topology.RECORD_KEY_HEADER) in self.keyed
        }
        if not ids:
            return
        by_record = self.store.aliases_of(ids, conn)
        for alias in self.writes.aliases:
            by_record.setdefault(alias.record_id, []).append(alias)
        for item in deliveries:
            name_aliases(item, by_record.get(str(item.headers.get(topology.RECORD_KEY_HEADER))))


def name_aliases(item: Outgoing, aliases: Sequence[Alias] | None) -> None:
    """Put the record's aliases on its delivery, per adapter (the newest of each)."""
    if aliases:
        item.headers[ALIASES_HEADER] = {a.source: a.alias_id for a in aliases}


def _kind(reason: str) -> Literal["ambiguous", "duplicate"]:
    return "ambiguous" if reason == AMBIGUOUS else "duplicate"


def _log(
    message: str,
    event: ChangeEvent,
    key: str | None,
    record_id: str | None,
    reason: str = "",
) -> None:
    # Ids and key names only: the key's value is customer data. A parked record waits
    # for an operator: a warning.
    log.log(
        logging.WARNING if reason else logging.INFO,
        message,
        extra=kv(
            event_id=event.event_id,
            event_record_id=event.record_id,
            record_id=record_id or "",
            entity=event.entity,
            adapter=event.source,
            key=key or "",
            reason=reason,
        ),
    )
