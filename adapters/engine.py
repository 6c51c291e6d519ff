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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from adapters import cursor, links
from adapters.badrows import BadRows, why
from adapters.base import Adapter, SourceRow, VersionMismatch
from adapters.canonical import InvalidRecord, validate
from adapters.capture import (
    Content,
    IdReused,
    NewVersion,
    Publish,
    capture_row,
    write_missed,
)
from adapters.deletes import HardDeletes
from adapters.outbox import Outbox
from adapters.rules import DeliveryAction, content_hash, delivery_action, versions_after_delivery
from adapters.sql_related import Deferred
from router.errors import PermanentWriteError, TransientWriteError
from router.events import ChangeEvent, Scalar
from router.logs import kv

MAX_WRITE_RETRIES = 3
Aliases = Mapping[str, str] | None


@dataclass
class CaptureResult:
    positions: dict[str, Any] = field(default_factory=dict)  # entity -> the cursor now
    changes: int = 0  # local changes recorded in the outbox
    invalid: int = 0  # rows skipped: they break the model or cannot be recorded


@dataclass(frozen=True)
class Page:
    """One page of one entity's capture, committed in one transaction."""

    rows: int
    changes: int
    invalid: int
    after: tuple[Any, str] | None  # keyset of its last row (None: no rows)
    more: bool = False  # journaled deletes still wait: the page read no rows yet
    # The first position of a row left for a later pass (a reference not resolvable yet,
    # adapters.sql_related.Deferred): the cursor must not pass it.
    held: Any = None

    @property
    def newest(self) -> Any:
        return self.after[0] if self.after else None


@dataclass
class _Tally:
    changes: int = 0
    invalid: int = 0
    held: Any = None


@dataclass(frozen=True)
class ApplyResult:
    action: str  # applied | skip-stale | skip-concurrent | local-change-first | not-mapped
    pending: bool = False  # a local change went into the outbox (local-change-first, or a
    # delete of the row whose freed id an insert reused)


def _no_rows(*_: Any) -> list[SourceRow]:
    return []


class SyncEngine:
    def __init__(
        self,
        adapter: Adapter,
        actor: str,
        overlap: float,
        page_size: int = 500,
        hard_delete_chunk: int = 10000,
    ) -> None:
        self.adapter = adapter
        self.cleansing = adapter.cleansing
        self.actor = actor
        self.overlap = overlap
        self.page_size = page_size
        self.mapped = adapter.entities()
        self.log = logging.getLogger(f"crmsync.adapter.{adapter.name}")
        self.bad_rows = BadRows(adapter.name, self.log)
        self.outbox = Outbox(adapter.name, actor, self.log)
        self.deletes = HardDeletes(adapter, self.outbox, hard_delete_chunk, page_size)

    @property
    def invalid_rows(self) -> int:
        """Rows capture skipped since start (each version once)."""
        return self.bad_rows.count

    # -- capture ------------------------------------------------------------------------
    def capture(self, cursors: dict[str, Any]) -> CaptureResult:
        """Every page of every entity in one call (the runtime calls :meth:`capture_page`
        itself, so sink writes run between pages)."""
        result = CaptureResult()
        for entity in self.mapped:
            bound = self.limit(entity)
            start = cursor.since(cursors.get(entity), self.overlap)
            after: tuple[Any, str] | None = None
            newest = None
            while True:
                page = self.capture_page(entity, start, after)
                result.changes += page.changes
                result.invalid += page.invalid
                bound = cursor.hold(bound, page.held)
                if page.after is not None:
                    after, newest = page.after, page.newest
                if page.rows < self.page_size and not page.more:
                    break
            result.positions[entity] = cursor.advance(cursors.get(entity), newest, bound)
        return result

    def limit(self, entity: str) -> Any:
        """How far this pass may move ``entity``'s cursor (None: keep none)."""
        with self.adapter.transaction() as tx:
            return cursor.limit(self.adapter.horizon(tx, entity), self.overlap)

    def capture_page(self, entity: str, start: Any, after: tuple[Any, str] | None) -> Page:
        """Read one page of rows changed since ``start`` (strictly after the keyset
        ``after``) and record each real local change as a pending link, in one
        transaction and one snapshot, journaled deletes first (a row read is then never
        taken for the deleted record whose id it reuses). A row that cannot be recorded
        is skipped, never the page: if the database refuses one (a value its link cannot
        hold), the page is done again one row per transaction and only that row is left
        out."""
        rows: list[SourceRow] | None = None
        tally = _Tally()
        more = False
        try:
            with self.adapter.snapshot() as tx:
                drained = self.deletes.drain(tx, entity)
                tally.changes, more = drained.published, drained.more
                read = self.adapter.read_changes if not more else _no_rows
                rows = read(tx, entity, start, after, self.page_size)
                self._capture_rows(tx, entity, rows, tally)
        except PermanentWriteError:
            if rows is None:
                raise  # the read itself failed: a configuration problem, not one row's
            tally = self._capture_one_by_one(entity, rows)
        last = rows[-1] if rows else None
        return Page(
            rows=len(rows),
            changes=tally.changes,
            invalid=tally.invalid,
            after=(last.position, last.source_record_id) if last else None,
            more=more,
            held=tally.held,
        )

    def _capture_one_by_one(self, entity: str, rows: Sequence[SourceRow]) -> _Tally:
        tally = _Tally()
        for row in rows:
            mine = _Tally()
            try:
                with self.adapter.snapshot() as tx:
                    # This row was read in the failed page's snapshot: read it again in
                    # this one, after its id's journaled deletes.
                    mine.changes = self.deletes.settle(tx, entity, row.source_record_id).published
                    now = self.adapter.read_record(tx, entity, row.source_record_id)
                    self._capture_rows(tx, entity, [now] if now else [], mine)
            except PermanentWriteError as e:
                mine = _Tally(invalid=1)
                self.bad_rows.report(row, why(e))
            tally.changes += mine.changes
            tally.invalid += mine.invalid
        return tally

    def _capture_rows(
        self, tx: Connection, entity: str, rows: Sequence[SourceRow], tally: _Tally
    ) -> dict[str, links.Link]:
        """The links of ``rows`` as they were before (a migration's export reuses them)."""
        known = links.by_source(tx, entity, [r.source_record_id for r in rows])
        soft_deletes = self.adapter.soft_deletes(entity)
        for row in rows:
            waiting = [v for v in row.fields.values() if isinstance(v, Deferred)]
            if waiting:
                if tally.held is None:
                    tally.held = row.position
                self.log.info(
                    "row waits for a record it refers to",
                    extra=kv(
                        entity=entity,
                        source_record_id=row.source_record_id,
                        refers_to=waiting[0].entity,
                        refers_to_id=waiting[0].source_record_id,
                    ),
                )
                continue
            try:
                fields = validate(entity, row.fields, self.cleansing)
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
                    self.outbox.record(tx, entity, row.source_record_id, decision, row.occurred_at)
                    tally.changes += 1
            except (SQLAlchemyError, TransientWriteError, PermanentWriteError):
                raise  # the transaction is in doubt: the caller decides (see capture_page)
            except Exception as e:
                # Anything else this one row raised (the model refuses a value, an id too
                # long for the wire, a counter that would overflow): skip it, not the page.
                tally.invalid += 1
                self.bad_rows.report(row, why(e))
        return known

    def scan_hard_deletes(self) -> int:
        """Hard deletes found by comparing one chunk of links with the table's ids, for
        entities without a delete journal, as delete events in the outbox; how many."""
        return self.deletes.scan()

    # -- outbox -------------------------------------------------------------------------
    def pending(self) -> list[links.OutboxEntry]:
        with self.adapter.transaction() as tx:
            return links.pending(tx)

    def mark_published(self, confirmed: Sequence[links.OutboxEntry]) -> None:
        with self.adapter.transaction() as tx:
            links.mark_published(tx, confirmed)

    # -- deliveries ---------------------------------------------------------------------
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
