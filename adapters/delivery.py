"""The delivery half of :class:`adapters.engine.SyncEngine`: apply what the router sent.

A delivery is written only if the record's link says it is newer than what this CRM
holds (:func:`adapters.rules.delivery_action`), conditionally on the version last seen:
a user's edit that capture has not reported yet is never overwritten, it is published
instead and the router judges the two as concurrent.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.engine import Connection

from adapters import links
from adapters.base import Adapter, SourceRow, VersionMismatch
from adapters.canonical import InvalidRecord, validate
from adapters.capture import Content, NewVersion, write_missed
from adapters.cleansing import Cleansing
from adapters.deletes import HardDeletes
from adapters.outbox import Outbox
from adapters.rules import DeliveryAction, content_hash, delivery_action, versions_after_delivery
from router.errors import PermanentWriteError, TransientWriteError
from router.events import ChangeEvent, Scalar
from router.logs import kv

MAX_WRITE_RETRIES = 3
Aliases = Mapping[str, str] | None


@dataclass(frozen=True)
class ApplyResult:
    action: str  # applied | skip-stale | skip-concurrent | local-change-first | not-mapped
    pending: bool = False  # a local change went into the outbox (local-change-first, or a
    # delete of the row whose freed id an insert reused)


class Deliveries:
    """Needs the attributes :class:`~adapters.engine.SyncEngine` sets."""

    adapter: Adapter
    cleansing: Cleansing
    actor: str
    mapped: dict[str, list[str]]
    log: logging.Logger
    outbox: Outbox
    deletes: HardDeletes

    def apply_many(
        self, events: Sequence[ChangeEvent], aliases: Sequence[Aliases] | None = None
    ) -> list[ApplyResult]:
        """Apply a batch in one transaction (one commit for the lot); ``aliases``: each
        delivery's ``x-crmsync-aliases`` header (adapter -> the record id it aliases)."""
        named = aliases or [None] * len(events)
        with self.adapter.transaction() as tx:
            return [self._apply(tx, e, a) for e, a in zip(events, named, strict=True)]

    def apply(self, event: ChangeEvent, aliases: Aliases = None) -> ApplyResult:
        with self.adapter.transaction() as tx:
            return self._apply(tx, event, aliases)

    def _apply(self, tx: Connection, event: ChangeEvent, aliases: Aliases = None) -> ApplyResult:
        mapped = self.mapped.get(event.entity)
        if mapped is None:
            return ApplyResult("not-mapped")
        link = links.by_record(tx, event.record_id)
        if link is None and aliases:
            link = self._rekey(tx, event, aliases.get(self.adapter.name))
        action = delivery_action(event.vclock, link.clock if link else None)
        if action is not DeliveryAction.APPLY:
            return ApplyResult(action.value)
        if link is not None and link.source_record_id is not None:
            # The journal may say its row was deleted here meanwhile: that delete goes
            # first (as when the write finds the row gone), and the link lets go of the id.
            settled = self.deletes.settle(tx, event.entity, link.source_record_id)
            if settled.published:
                return ApplyResult("local-change-first", pending=True)
            if settled.entries:
                link = links.by_record(tx, event.record_id)
        fields = {name: value for name, value in event.fields.items() if name in mapped}
        for _ in range(MAX_WRITE_RETRIES):
            try:
                back = self._write(tx, event, link, fields)
            except VersionMismatch as miss:
                outcome = self._on_miss(tx, event, link, miss.current)
                if isinstance(outcome, ApplyResult):
                    return outcome
                link = outcome  # only unmapped columns changed: retry on the new version
                continue
            owed = self._record_applied(tx, event, link, back)
            return ApplyResult("applied", pending=owed > 0)
        raise TransientWriteError(f"record {event.record_id} kept changing under the write")

    def _rekey(self, tx: Connection, event: ChangeEvent, alias: str | None) -> links.Link | None:
        link = links.follow_alias(tx, alias, event.record_id) if alias else None
        if link is not None:
            self.log.info(
                "link re-keyed to the record the router matched it to",
                extra=kv(record_id=event.record_id, alias_id=alias, adapter=self.adapter.name),
            )
        return link

    def _write(
        self, tx: Connection, event: ChangeEvent, link: links.Link | None, fields: dict[str, Scalar]
    ) -> SourceRow | None:
        sid = link.source_record_id if link else None
        if event.op == "delete":
            if link is None or sid is None or link.deleted:
                return None  # nothing here to delete: keep a tombstone only
            if self._as_last_seen(tx, event.entity, link, sid) is None:
                return None  # already gone: the delete is done
            return self.adapter.delete_record(tx, event.entity, sid, link.version)
        if link is not None and sid is not None:
            current = self._as_last_seen(tx, event.entity, link, sid, missing_ok=link.deleted)
            if current is None:
                sid = None  # hard-deleted here; the record comes back as a new row
        return self.adapter.write_record(
            tx, event.entity, sid, event.record_id, fields, link.version if link and sid else None
        )

    def _as_last_seen(
        self, tx: Connection, entity: str, link: links.Link, sid: str, missing_ok: bool = True
    ) -> SourceRow | None:
        """The row, locked for this transaction, if it is still the version the link
        knows: same token *and* same mapped content. A token of second precision
        (MariaDB ``DATETIME``, many CRMs' ``datetime`` columns) keeps its value for an
        edit made in the same second, so the token alone would let the write overwrite
        it. Anything else raises :class:`VersionMismatch` (None: the row is gone and
        ``missing_ok`` is false)."""
        current = self.adapter.read_record(tx, entity, sid, for_update=True)
        if current is None:
            if missing_ok:
                return None
            raise VersionMismatch(None)
        if current.version != link.version or not self._same_content(entity, current, link):
            raise VersionMismatch(current)
        return current

    def _same_content(self, entity: str, row: SourceRow, link: links.Link) -> bool:
        try:
            fields = validate(entity, row.fields, self.cleansing)
        except InvalidRecord:
            return False  # edited into something the model refuses: not the link's
        return content_hash(fields, row.deleted) == link.content_hash

    def _record_applied(
        self, tx: Connection, event: ChangeEvent, link: links.Link | None, back: SourceRow | None
    ) -> int:
        """Record the delivered version; returns how many local changes went into the
        outbox meanwhile (deletes of rows whose freed id the insert reused)."""
        deleted = event.op == "delete"
        owed = 0
        if back is not None:
            # What the CRM actually stored (after its triggers) is this clock's version, so
            # the echo capture will see is recognised by its hash.
            fields = self._validate_written(event, back)
            deleted = back.deleted
            sid: str | None = back.source_record_id
            version = back.version
            if link is None or sid != link.source_record_id:  # a row inserted: a freed id?
                owed = self.deletes.settle(tx, event.entity, back.source_record_id).published
        else:
            fields = link.fields if link else {}
            sid = link.source_record_id if link else None
            version = None
        # A value the delivery changed is the hub's now; one it left keeps its counter.
        known, before = (link.field_versions, link.fields) if link else (None, {})
        links.save(
            tx,
            links.Link(
                record_id=event.record_id,
                entity=event.entity,
                source_record_id=sid,
                clock=event.vclock,
                content_hash=content_hash(fields, deleted),
                fields=fields,
                version=version,
                deleted=deleted,
                field_versions=versions_after_delivery(known, before, fields, self.actor),
            ),
        )
        return owed

    def _validate_written(self, event: ChangeEvent, row: SourceRow) -> dict[str, Scalar]:
        """Canonical values of a row we are about to record as a version. A value that
        breaks the model cannot be fixed by retrying: the write goes to the DLQ."""
        try:
            return validate(event.entity, row.fields, self.cleansing)
        except InvalidRecord as e:
            raise PermanentWriteError(
                f"record {event.record_id} would hold an invalid value: {e}"
            ) from e

    def _on_miss(
        self, tx: Connection, event: ChangeEvent, link: links.Link | None, current: SourceRow | None
    ) -> ApplyResult | links.Link:
        """The link to retry the write with, or the result when a local change goes first."""
        assert link is not None and link.source_record_id is not None
        content = None
        if current is not None:
            fields = self._validate_written(event, current)
            content = Content(fields, current.deleted, current.version)
        outcome = write_missed(link, content, actor=self.actor)
        if isinstance(outcome, NewVersion):
            return link.evolve(version=outcome.version)
        # A user edit capture has not reported yet: never overwrite it. Publish it; the
        # router sees it concurrent with this delivery and resolves for everyone.
        when = current.occurred_at if current is not None else datetime.now(UTC)
        self.outbox.record(tx, event.entity, link.source_record_id, outcome, when)
        if current is not None:
            self.log.info(
                "user edit won the race with a delivery; published it instead",
                extra=kv(
                    event_id=event.event_id, record_id=event.record_id, adapter=self.adapter.name
                ),
            )
        return ApplyResult("local-change-first", pending=True)
