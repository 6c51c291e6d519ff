"""The capture rule, pure: what a row read from the CRM means for the hub.

The SQL engine (:class:`adapters.engine.SyncEngine`) and the convergence simulation
(``tests/unit/convergence_model.py``) both call these functions and act on the value
they return, so the simulation exercises the production rule, not a copy of it.

* :func:`capture_row`, for a row capture read (or re-read through the overlap window):

  - the link's content (an echo of what we wrote, or a re-read): :attr:`Skip.ECHO`, or
    :class:`NewVersion` when only columns crmsync does not map changed (the version
    token moved: conditional writes need the new one);
  - a row deleted before it was ever shared: :attr:`Skip.UNSHARED`, nothing to tell;
  - anything else is a local change, :class:`Publish`, on top of the link's clock,
    with the field versions the link will hold (the changed fields set by this edit);
  - without a ``deleted`` column, a row under the id of a record deleted here is a new
    record that reused the id (crmsync re-inserts resurrected records under a fresh
    id): :class:`IdReused`, detach the old link, then act on what it wraps. Tying the
    row to the old record would resurrect that customer with someone else's data.

* :func:`write_missed`, for a conditional write of a delivery that found the row changed
  since the version last seen: the mapped content is the link's (someone edited a
  column crmsync does not map): :class:`NewVersion`, retry the write on it; otherwise a
  user edit capture has not reported yet: :class:`Publish` it first and skip the
  delivery (the router sees the two concurrent and resolves for everyone).

* :func:`row_gone`, for a row gone from a table without a ``deleted`` column: a delete.

* :func:`journaled_delete`, for an id the delete journal says was deleted: a delete
  when its link is live, nothing when it was never shared or is already a tombstone.
  Either way the link lets go of the id, so a row under it later is a new record.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from adapters.rules import (
    FieldVersions,
    changed_fields,
    content_hash,
    local_clock,
    versions_after_change,
)
from router.clock import VectorClock
from router.events import ChangeEvent, Op, Scalar


@dataclass(frozen=True)
class Content:
    """A row's canonical content: mapped fields, tombstone flag, the CRM's version token."""

    fields: Mapping[str, Scalar]
    deleted: bool
    version: str | None


class Known(Protocol):
    """What the rules read of a record's link (:class:`adapters.links.Link` is one)."""

    @property
    def record_id(self) -> str: ...
    @property
    def clock(self) -> VectorClock: ...
    @property
    def content_hash(self) -> str: ...
    @property
    def fields(self) -> Mapping[str, Scalar]: ...
    @property
    def version(self) -> str | None: ...
    @property
    def deleted(self) -> bool: ...
    @property
    def field_versions(self) -> FieldVersions | None: ...


class Skip(enum.Enum):
    """Nothing to publish and nothing to remember."""

    ECHO = "echo"  # the link's content at the link's version
    UNSHARED = "unshared"  # deleted before it was ever shared


@dataclass(frozen=True)
class NewVersion:
    """Only columns crmsync does not map changed: the link's version becomes ``version``
    (in capture: remember it; after a missed write: remember it and retry the write)."""

    version: str | None


@dataclass(frozen=True)
class Publish:
    """A local change: publish it, and record it as the link's pending version."""

    record_id: str | None  # the link's record; None: a record new to the hub
    clock: VectorClock  # the link's clock with our own counter + 1
    content: Content
    content_hash: str
    changed: tuple[str, ...]  # fields that differ from the link's version (all if new)
    field_versions: FieldVersions | None = None  # the link's, after this change

    @property
    def op(self) -> Op:
        return "delete" if self.content.deleted else "upsert"

    def event(
        self,
        *,
        event_id: str,
        record_id: str,
        source: str,
        actor: str,
        entity: str,
        source_record_id: str,
        occurred_at: datetime,
    ) -> ChangeEvent:
        """The change as a wire event. ``record_id`` is :attr:`record_id`, or the id the
        caller gave a new record; ``actor`` the one whose counter :attr:`clock` moved."""
        return ChangeEvent(
            event_id=event_id,
            source=source,
            actor=actor,
            entity=entity,
            record_id=record_id,
            source_record_id=source_record_id,
            op=self.op,
            clock=self.clock.to_dict(),
            fields=dict(self.content.fields),
            changed=list(self.changed),
            occurred_at=occurred_at,
            field_versions=self.field_versions.for_event(actor) if self.field_versions else None,
        )


@dataclass(frozen=True)
class IdReused:
    """The row sits under the id of a record deleted here, in a table without a
    ``deleted`` column: it is a new record. Detach the old link from the id (keep its
    tombstone), then act on ``then``, the decision for the row as a record never seen."""

    then: Skip | Publish


CaptureDecision = Skip | NewVersion | IdReused | Publish


def capture_row(
    content: Content, link: Known | None, *, actor: str, soft_deletes: bool
) -> CaptureDecision:
    """What a captured row means, given its record's link (None: a row never seen)."""
    if link is not None and link.deleted and not soft_deletes:
        return IdReused(_unseen(content, actor))
    if link is None:
        return _unseen(content, actor)
    digest = content_hash(content.fields, content.deleted)
    if digest == link.content_hash:
        return Skip.ECHO if content.version == link.version else NewVersion(content.version)
    return _change(content, digest, link, actor)


def write_missed(link: Known, current: Content | None, *, actor: str) -> NewVersion | Publish:
    """A conditional write found the row changed since ``link.version``; ``current`` is
    the row as it is now (None: it is gone)."""
    if current is None:
        return row_gone(link, actor=actor)
    digest = content_hash(current.fields, current.deleted)
    if digest == link.content_hash:
        return NewVersion(current.version)
    return _change(current, digest, link, actor)


def row_gone(link: Known, *, actor: str) -> Publish:
    """The row of a live record vanished (a hard delete): a delete carrying its last
    known fields."""
    content = Content(link.fields, True, None)
    return _change(content, content_hash(content.fields, True), link, actor)


def journaled_delete(link: Known | None, *, actor: str) -> Publish | None:
    """The journal says the row under ``link``'s id was deleted (None: no link has it)."""
    if link is None or link.deleted:
        return None  # never shared, or deleted already (our own delivery, a soft delete)
    return row_gone(link, actor=actor)


def _unseen(content: Content, actor: str) -> Skip | Publish:
    if content.deleted:
        return Skip.UNSHARED
    return _change(content, content_hash(content.fields, False), None, actor)


def _change(content: Content, digest: str, link: Known | None, actor: str) -> Publish:
    clock = local_clock(link.clock if link is not None else None, actor)
    changed = changed_fields(link.fields if link is not None else None, content.fields)
    known = link.field_versions if link is not None else None
    return Publish(
        record_id=link.record_id if link is not None else None,
        clock=clock,
        content=content,
        content_hash=digest,
        changed=tuple(changed),
        field_versions=versions_after_change(
            known, link is None, changed, content.fields, clock, actor
        ),
    )
