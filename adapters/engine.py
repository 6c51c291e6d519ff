"""The synchronous heart of an adapter: capture local changes, apply deliveries.

Runs on the adapter's single worker thread. Every method works in one transaction on
the links database, so a data write, its link and any local change it uncovered are
committed together. What a row means is decided by the pure rules of
:mod:`adapters.capture` and :mod:`adapters.rules`; this is the shell that reads rows,
writes them and keeps the links. Local changes go into the outbox (pending links); the
async shell (:mod:`adapters.runtime`) publishes :meth:`SyncEngine.pending` and reports
confirms back through :meth:`SyncEngine.mark_published`.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.engine import Connection

from adapters import links
from adapters.base import Adapter, SourceRow, VersionMismatch
from adapters.canonical import InvalidRecord, validate
from adapters.capture import (
    Content,
    IdReused,
    NewVersion,
    Publish,
    capture_row,
    row_gone,
    write_missed,
)
from adapters.rules import DeliveryAction, content_hash, delivery_action
from router.errors import PermanentWriteError, TransientWriteError
from router.events import ChangeEvent, Scalar, encode, new_event_id
from router.logs import kv

MAX_WRITE_RETRIES = 3


@dataclass
class CaptureResult:
    positions: dict[str, Any] = field(default_factory=dict)  # entity -> newest position seen
    changes: int = 0  # local changes recorded in the outbox
    invalid: int = 0


@dataclass(frozen=True)
class ApplyResult:
    action: str  # applied | skip-stale | skip-concurrent | local-change-first | not-mapped
    pending: bool = False  # a local change went into the outbox (local-change-first)


def before(position: Any, seconds: float) -> Any:
    """``position`` moved back by the overlap window, for whatever type the cursor is."""
    if position is None:
        return None
    if isinstance(position, datetime):
        return position - timedelta(seconds=seconds)
    if isinstance(position, (int, float)):
        return position - seconds
    return position  # opaque ordered text: no arithmetic, the window is zero


def occurred_at(row: SourceRow) -> datetime:
    if isinstance(row.position, datetime):
        return row.position if row.position.tzinfo else row.position.replace(tzinfo=UTC)
    return datetime.now(UTC)


class SyncEngine:
    def __init__(self, adapter: Adapter, actor: str, overlap: float, page_size: int = 500) -> None:
        self.adapter = adapter
        self.actor = actor
        self.overlap = overlap
        self.page_size = page_size
        self.mapped = adapter.entities()
        self.log = logging.getLogger(f"crmsync.adapter.{adapter.name}")
        self._reported: set[tuple[str, str, str]] = set()
        self.invalid_rows = 0

    # -- capture ------------------------------------------------------------------------
    def capture(self, cursors: dict[str, Any]) -> CaptureResult:
        """Read rows changed since each entity's cursor (less the overlap window, so rows
        committed late with an older timestamp are still seen) and record each real local
        change as a pending link in the same transaction."""
        result = CaptureResult()
        for entity in self.mapped:
            since = before(cursors.get(entity), self.overlap)
            after: tuple[Any, str] | None = None
            while True:
                with self.adapter.transaction() as tx:
                    rows = self.adapter.read_changes(tx, entity, since, after, self.page_size)
                    if not rows:
                        break
                    self._capture_rows(tx, entity, rows, result)
                last = rows[-1]
                after = (last.position, last.source_record_id)
                result.positions[entity] = last.position
                if len(rows) < self.page_size:
                    break
        return result

    def _capture_rows(
        self, tx: Connection, entity: str, rows: Sequence[SourceRow], result: CaptureResult
    ) -> None:
        known = links.by_source(tx, entity, [r.source_record_id for r in rows])
        soft_deletes = self.adapter.soft_deletes(entity)
        for row in rows:
            try:
                fields = validate(entity, row.fields)
            except InvalidRecord as e:
                result.invalid += 1
                self._report_invalid(row, str(e))
                continue
            link = known.get(row.source_record_id)
            content = Content(fields, row.deleted, row.version)
            decision = capture_row(content, link, actor=self.actor, soft_deletes=soft_deletes)
            if isinstance(decision, IdReused):
                assert link is not None
                links.save(tx, link.evolve(source_record_id=None))
                decision = decision.then
            if isinstance(decision, NewVersion):
                assert link is not None
                links.save(tx, link.evolve(version=decision.version))
            elif isinstance(decision, Publish):
                self._local_change(tx, entity, row.source_record_id, decision, occurred_at(row))
                result.changes += 1

    def _local_change(
        self, tx: Connection, entity: str, source_record_id: str, change: Publish, when: datetime
    ) -> None:
        """Record ``change`` as the link's pending version, in the outbox."""
        record_id = change.record_id or str(uuid.uuid4())
        event = change.event(
            event_id=new_event_id(),
            record_id=record_id,
            source=self.adapter.name,
            actor=self.actor,
            entity=entity,
            source_record_id=source_record_id,
            occurred_at=when,
        )
        links.save(
            tx,
            links.Link(
                record_id=record_id,
                entity=entity,
                source_record_id=source_record_id,
                clock=change.clock,
                content_hash=change.content_hash,
                fields=dict(change.content.fields),
                version=change.content.version,
                deleted=change.content.deleted,
                published=False,
                pending_event=encode(event),
                pending_event_id=event.event_id,
                pending_routing_key=event.routing_key,
            ),
        )
        self.log.debug(
            "local change",
            extra=kv(
                event_id=event.event_id, record_id=record_id, adapter=self.adapter.name, op=event.op
            ),
        )

    def _report_invalid(self, row: SourceRow, reason: str) -> None:
        key = (row.entity, row.source_record_id, str(row.version))
        if key in self._reported:
            return  # the overlap window re-reads rows: report and count each version once
        self._reported.add(key)
        self.invalid_rows += 1
        self.log.warning(
            "invalid source row not published",
            extra=kv(
                adapter=self.adapter.name,
                entity=row.entity,
                source_record_id=row.source_record_id,
                reason=reason,
            ),
        )

    def scan_hard_deletes(self) -> int:
        """Rows gone from a table without a ``deleted`` column become delete events (in
        the outbox); returns how many."""
        found = 0
        for entity in self.mapped:
            with self.adapter.transaction() as tx:
                present = self.adapter.list_ids(tx, entity)
                if present is None:
                    continue
                live = links.live_source_ids(tx, entity)
                gone = [sid for sid in live if sid not in present]
                known = links.by_source(tx, entity, gone)
                for sid in gone:
                    change = row_gone(known[sid], actor=self.actor)
                    self._local_change(tx, entity, sid, change, datetime.now(UTC))
                    found += 1
        return found

    # -- outbox -------------------------------------------------------------------------
    def pending(self) -> list[links.OutboxEntry]:
        with self.adapter.transaction() as tx:
            return links.pending(tx)

    def mark_published(self, confirmed: Sequence[links.OutboxEntry]) -> None:
        with self.adapter.transaction() as tx:
            links.mark_published(tx, confirmed)

    # -- deliveries ---------------------------------------------------------------------
    def apply_many(self, events: Sequence[ChangeEvent]) -> list[ApplyResult]:
        """Apply a batch in one transaction (one commit for the lot)."""
        with self.adapter.transaction() as tx:
            return [self._apply(tx, event) for event in events]

    def apply(self, event: ChangeEvent) -> ApplyResult:
        with self.adapter.transaction() as tx:
            return self._apply(tx, event)

    def _apply(self, tx: Connection, event: ChangeEvent) -> ApplyResult:
        mapped = self.mapped.get(event.entity)
        if mapped is None:
            return ApplyResult("not-mapped")
        link = links.by_record(tx, event.record_id)
        action = delivery_action(event.vclock, link.clock if link else None)
        if action is not DeliveryAction.APPLY:
            return ApplyResult(action.value)
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
            self._record_applied(tx, event, link, back)
            return ApplyResult("applied")
        raise TransientWriteError(f"record {event.record_id} kept changing under the write")

    def _write(
        self, tx: Connection, event: ChangeEvent, link: links.Link | None, fields: dict[str, Scalar]
    ) -> SourceRow | None:
        sid = link.source_record_id if link else None
        if event.op == "delete":
            if link is None or sid is None or link.deleted:
                return None  # nothing here to delete: keep a tombstone only
            return self.adapter.delete_record(tx, event.entity, sid, link.version)
        gone = link is not None and link.deleted and sid is not None
        if gone and self.adapter.read_record(tx, event.entity, str(sid)) is None:
            sid = None  # hard-deleted here; the record comes back as a new row
        return self.adapter.write_record(
            tx, event.entity, sid, event.record_id, fields, link.version if link and sid else None
        )

    def _record_applied(
        self, tx: Connection, event: ChangeEvent, link: links.Link | None, back: SourceRow | None
    ) -> None:
        deleted = event.op == "delete"
        if back is not None:
            # What the CRM actually stored (after its triggers) is this clock's version, so
            # the echo capture will see is recognised by its hash.
            fields = self._validate_written(event, back)
            deleted = back.deleted
            sid: str | None = back.source_record_id
            version = back.version
        else:
            fields = link.fields if link else {}
            sid = link.source_record_id if link else None
            version = None
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
            ),
        )

    @staticmethod
    def _validate_written(event: ChangeEvent, row: SourceRow) -> dict[str, Scalar]:
        """Canonical values of a row we are about to record as a version. A value that
        breaks the model cannot be fixed by retrying: the write goes to the DLQ."""
        try:
            return validate(event.entity, row.fields)
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
        when = occurred_at(current) if current is not None else datetime.now(UTC)
        self._local_change(tx, event.entity, link.source_record_id, outcome, when)
        if current is not None:
            self.log.info(
                "user edit won the race with a delivery; published it instead",
                extra=kv(
                    event_id=event.event_id, record_id=event.record_id, adapter=self.adapter.name
                ),
            )
        return ApplyResult("local-change-first", pending=True)
