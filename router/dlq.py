"""Dead-letter entries as operators see them: ids, error types, selections, replays.

Pure: messages come in as values (body, headers), decisions go out as values. The
broker side (browse, take, republish) is :mod:`router.broker.dlq`; the procedures that
drive it (replay, edit, purge) are in :mod:`router.dlq_ops`, grouping and presenting in
:mod:`router.dlq_view`, the commands in
:mod:`router.cli.dlq`.

Where an entry's facts come from (DESIGN "Headers on a dead-lettered message"):

* a write the adapter gave up on carries crmsync's ``x-crmsync-*`` history headers;
* a poison message the *broker* dead-lettered (the sink's delivery limit) carries only
  the broker's ``x-death`` (reason ``delivery_limit``), maybe with stale ``x-crmsync-*``
  headers of earlier retries: it is a ``poison`` entry of the adapter named by the queue
  in ``x-death``;
* an event the router refused (``crmsync.router.invalid``) carries ``x-crmsync-reason``
  and ``x-crmsync-detail``: the reason is its error type; one the broker dead-lettered
  from the ingress has only ``x-death``: ``delivery-limit`` (or the broker's reason).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

from router import topology
from router.errors import CrmsyncError, DecodeError
from router.events import CONTENT_TYPE, ENTITY_RE, NAME_RE, ChangeEvent, Scalar, decode, encode

ROUTER: Final = "router"  # ``--adapter router`` names the router's invalid queue
GroupBy = Literal["error", "entity", "adapter"]
MIN_ID_PREFIX: Final = 8  # shorter prefixes are too easy to get wrong in a destructive command


class UnknownEntry(CrmsyncError, LookupError):
    """No entry with that id in the queues searched."""


class UnknownQueue(CrmsyncError, LookupError):
    """The dead-letter queue does not exist on this broker/vhost."""


class NotReplayable(CrmsyncError):
    """The entry cannot be republished (its body does not decode)."""


@dataclass(frozen=True)
class Death:
    """The latest ``x-death`` record: why and from where the broker dead-lettered it."""

    reason: str
    queue: str
    time: float | None
    count: int


@dataclass(frozen=True)
class Entry:
    """One message in a dead-letter queue, in the queue's order (``position``)."""

    id: str
    queue: str
    position: int
    adapter: str  # the target the write was for; ``router`` for the invalid queue
    error_type: str
    error: str
    traceback: str
    attempts: int | None
    first_failed_at: float | None
    last_failed_at: float | None
    headers: Mapping[str, Any]
    body: bytes
    event: ChangeEvent | None
    decode_error: str | None

    @property
    def entity(self) -> str | None:
        return self.event.entity if self.event else None

    @property
    def record_id(self) -> str | None:
        return self.event.record_id if self.event else None

    @property
    def failed_at(self) -> float | None:
        """When it landed in the DLQ: its last failure."""
        return self.last_failed_at if self.last_failed_at is not None else self.first_failed_at

    def age(self, now: float) -> float | None:
        when = self.failed_at
        return None if when is None else max(0.0, now - when)


# -- queues -------------------------------------------------------------------------------


def queue_for(adapter: str) -> str:
    """``crmsync.dlq.NAME``, or the router's invalid queue for ``router``."""
    if adapter == ROUTER:
        return topology.INVALID
    if not re.fullmatch(NAME_RE, adapter):
        raise CrmsyncError(f"{adapter!r} is not an adapter name")
    return topology.dlq_queue(adapter)


def adapter_of(queue: str) -> str:
    if queue == topology.INVALID:
        return ROUTER
    return queue.removeprefix(topology.dlq_queue(""))


# -- reading one message ------------------------------------------------------------------


def entry_id(body: bytes, event: ChangeEvent | None) -> str:
    """The event's id where the body decodes, else a short hash of the body."""
    if event is not None:
        return event.event_id
    return "h-" + hashlib.sha256(body).hexdigest()[:12]


def _epoch(value: Any) -> float | None:
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    if isinstance(value, int) and not isinstance(value, bool):
        return value / 1000.0  # epoch ms, as adapters write it (see topology)
    if isinstance(value, float):
        return value  # seconds: entries written before the header became milliseconds
    return None


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


def latest_death(headers: Mapping[str, Any]) -> Death | None:
    """The first ``x-death`` record; RabbitMQ keeps the most recent one first."""
    deaths = headers.get("x-death")
    if not isinstance(deaths, list | tuple) or not deaths or not isinstance(deaths[0], Mapping):
        return None
    first = deaths[0]
    count = first.get("count")
    return Death(
        reason=_text(first.get("reason")),
        queue=_text(first.get("queue")),
        time=_epoch(first.get("time")),
        count=int(count) if isinstance(count, int) else 1,
    )


def _int(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    try:
        return int(_text(value))
    except ValueError:
        return None


def _classify(queue: str, headers: Mapping[str, Any], death: Death | None) -> tuple[str, str, str]:
    """(target adapter, error type, one-line error)."""
    if queue == topology.INVALID:
        reason = _text(headers.get(topology.REASON_HEADER))
        if not reason and death is not None:
            # The broker dead-lettered it from the ingress (its delivery limit, the
            # backstop against an event that kills the router whenever it is held).
            reason = death.reason.replace("_", "-") or "unknown"
            why = "the router died or never settled it while holding it"
            return ROUTER, reason, f"{death.reason} in {death.queue} ({why})"
        reason = reason or "unknown"
        return ROUTER, reason, _text(headers.get(topology.DETAIL_HEADER)) or reason
    target = _text(headers.get(topology.TARGET_HEADER)) or adapter_of(queue)
    error = _text(headers.get(topology.ERROR_HEADER))
    if death is not None and death.reason == "delivery_limit":
        # The broker's verdict is the latest word: older x-crmsync-* headers only tell
        # how the earlier, retried attempts failed.
        sink = topology.sink_queue("")
        if death.queue.startswith(sink):
            target = death.queue.removeprefix(sink)
        message = (
            f"delivery limit exceeded in {death.queue} (the adapter crashed or never settled it)"
        )
        if error:
            message += f"; last recorded error: {error}"
        return target, "poison", message
    kind = _text(headers.get(topology.ERROR_TYPE_HEADER))
    if not kind and death is not None:
        # Dead-lettered by the broker for another reason (rejected, expired, maxlen).
        return target, death.reason or "unknown", f"{death.reason} in {death.queue}"
    return target, kind or "unknown", error or "(no error recorded)"


def read_entry(queue: str, position: int, body: bytes, headers: Mapping[str, Any] | None) -> Entry:
    """A browsed message as an :class:`Entry`."""
    headers = dict(headers or {})
    event: ChangeEvent | None
    try:
        event, decode_error = decode(body), None
    except DecodeError as e:
        event, decode_error = None, str(e)
    death = latest_death(headers)
    target, kind, error = _classify(queue, headers, death)
    first = _epoch(headers.get(topology.FIRST_FAILED_HEADER))
    last = _epoch(headers.get(topology.LAST_FAILED_HEADER))
    if death is not None and kind == "poison":
        last = death.time or last
    return Entry(
        id=entry_id(body, event),
        queue=queue,
        position=position,
        adapter=target,
        error_type=kind,
        error=error,
        traceback=_text(headers.get(topology.TRACEBACK_HEADER)),
        attempts=_int(headers.get(topology.ATTEMPTS_HEADER)),
        first_failed_at=first if first is not None else last,
        last_failed_at=last if last is not None else first,
        headers=headers,
        body=body,
        event=event,
        decode_error=decode_error,
    )


# -- selecting ----------------------------------------------------------------------------


def _matches(entry: Entry, wanted: str) -> bool:
    return entry.id == wanted or (len(wanted) >= MIN_ID_PREFIX and entry.id.startswith(wanted))


def find(entries: Sequence[Entry], wanted: str, where: str) -> list[Entry]:
    """Every copy of the entry ``wanted`` (an id, or an unambiguous prefix of at least
    :data:`MIN_ID_PREFIX` characters). ``where`` names the queues searched, for the error."""
    exact = [e for e in entries if e.id == wanted]
    if exact:
        return exact
    found = [e for e in entries if _matches(e, wanted)]
    ids = sorted({e.id for e in found})
    if len(ids) > 1:
        raise UnknownEntry(f"{wanted!r} matches {len(ids)} entries in {where}; give the whole id")
    if not found:
        raise UnknownEntry(f"no entry {wanted} in {where}")
    return found


def select(
    entries: Sequence[Entry],
    where: str,
    ids: Sequence[str] = (),
    error_type: str | None = None,
) -> list[Entry]:
    """The entries named by ``ids`` (each must exist) or all of them, narrowed to
    ``error_type``; in queue order, each once."""
    chosen: Iterable[Entry] = entries
    if ids:
        picked = {(e.queue, e.position) for wanted in ids for e in find(entries, wanted, where)}
        chosen = [e for e in entries if (e.queue, e.position) in picked]
    return [e for e in chosen if error_type is None or e.error_type == error_type]


# -- replaying ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Republish:
    """What a replay publishes for one entry."""

    exchange: str
    routing_key: str
    body: bytes
    message_id: str
    headers: dict[str, Any]
    content_type: str = CONTENT_TYPE


def replay_headers(headers: Mapping[str, Any], record_id: str) -> dict[str, Any]:
    """crmsync's history travels on; the broker's ``x-death``, ``x-delivery-count`` and
    other ``x-*`` do not (DESIGN "Known traps"), nor ``CC``/``BCC``: a replay goes to one
    adapter only."""
    kept = {
        key: value
        for key, value in headers.items()
        if key.startswith("x-crmsync-") or not (key.startswith("x-") or key in ("CC", "BCC"))
    }
    kept[topology.RECORD_KEY_HEADER] = record_id
    # A replay is a new try after a fix: a fresh retry budget (as a ServicePulse retry
    # gets), the rest of the history kept, and the replay itself counted.
    kept[topology.ATTEMPTS_HEADER] = 0
    kept[topology.REPLAYS_HEADER] = (_int(headers.get(topology.REPLAYS_HEADER)) or 0) + 1
    return kept


def replay_of(entry: Entry) -> Republish:
    """The event with ``origin = replay``, to the target adapter through
    ``crmsync.deliveries``; an entry of the router's invalid queue goes back to the router
    through ``crmsync.changes`` under its own routing key."""
    if entry.event is None:
        raise NotReplayable(
            f"entry {entry.id} in {entry.queue} cannot be replayed: {entry.decode_error}; "
            f"inspect it with 'crmsync dlq show {entry.id}', then purge it"
        )
    event = entry.event.model_copy(update={"origin": "replay"})
    if entry.queue == topology.INVALID:
        exchange, key = topology.CHANGES, event.routing_key
    else:
        exchange, key = topology.DELIVERIES, entry.adapter
    return Republish(
        exchange, key, encode(event), event.event_id, replay_headers(entry.headers, event.record_id)
    )


Planned = tuple[Entry, Republish]
Skipped = tuple[Entry, str]  # the entry and why it is left where it is


def plan_replay(entries: Iterable[Entry], named: bool) -> tuple[list[Planned], list[Skipped]]:
    """What a replay of ``entries`` publishes, in their order, and which it leaves (with
    the reason). When the operator ``named`` the entries one by one, one that cannot be
    replayed is refused (:class:`NotReplayable`) before anything is changed: skipping it
    would quietly do less than was asked."""
    plan: list[Planned] = []
    skipped: list[Skipped] = []
    for entry in entries:
        try:
            plan.append((entry, replay_of(entry)))
        except NotReplayable as e:
            if named:
                raise
            skipped.append((entry, str(e)))
    return plan, skipped


# -- editing ------------------------------------------------------------------------------


def parse_assignments(items: Sequence[str], option: str = "--set") -> dict[str, Scalar]:
    """``field=text`` sets a string; ``field:=JSON`` a typed scalar (``age:=42``,
    ``vip:=true``, ``phone:=null``), as httpie spells it."""
    values: dict[str, Scalar] = {}
    for item in items:
        typed = re.match(r"^([^=:]+):=(.*)$", item, re.S)
        plain = None if typed else re.match(r"^([^=]+)=(.*)$", item, re.S)
        match = typed or plain
        if match is None:
            raise CrmsyncError(f"{option} {item!r}: write field=value (or field:=JSON)")
        name, raw = match.group(1).strip(), match.group(2)
        if not re.fullmatch(ENTITY_RE, name):
            raise CrmsyncError(f"{option} {item!r}: {name!r} is not a field name")
        value: Any = raw
        if typed:
            try:
                value = json.loads(raw)
            except ValueError:
                raise CrmsyncError(f"{option} {item!r}: {raw!r} is not JSON") from None
            if isinstance(value, dict | list):
                raise CrmsyncError(
                    f"{option} {item!r}: values are scalars, not {type(value).__name__}s"
                )
        values[name] = value
    if not values and option == "--set":
        raise CrmsyncError("say what to change: --set field=value")
    return values


def edit_request(entry: Entry, changes: Mapping[str, Scalar]) -> dict[str, Any]:
    """The ``op.edit`` body asking the router for a new hub version of the entry's record."""
    if entry.event is None:
        raise NotReplayable(
            f"entry {entry.id} in {entry.queue} cannot be edited: {entry.decode_error}"
        )
    return {"record_id": entry.event.record_id, "entity": entry.event.entity, "set": dict(changes)}
