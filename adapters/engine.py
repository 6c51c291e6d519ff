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
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from adapters import cursor, links
from adapters.badrows import BadRows, why
from adapters.base import Adapter, SourceRow
from adapters.canonical import validate
from adapters.capture import (
    Content,
    IdReused,
    NewVersion,
    Publish,
    capture_row,
)
from adapters.deletes import HardDeletes
from adapters.delivery import Deliveries
from adapters.outbox import Outbox
from adapters.sql_related import Deferred
from router.errors import PermanentWriteError, TransientWriteError
from router.logs import kv


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


def _no_rows(*_: Any) -> list[SourceRow]:
    return []


class SyncEngine(Deliveries):
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
