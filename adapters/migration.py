"""An adapter's part in a bulk migration and in reconcile (runs on its worker thread).

As the **source** it exports pages of its records in source-id order: each page first
goes through capture (a row changed since capture last looked is recorded and
published as the live change it is), then every valid row is announced as the version
its link holds, ``origin = migration``, so the router judges it like any version and a
record the hub already has costs no new version. Rows that break the canonical model are
returned with the reason, never silently dropped.

As the **target** it applies a batch in one transaction and logs each record's outcome
(created, linked, updated, unchanged, failed) in that transaction.

For reconcile it hashes the canonical content of its linked records page by page, in
record-id order, so two CRMs compare by a merge of two sorted streams in bounded memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from adapters import links
from adapters.badrows import why
from adapters.base import SourceRow
from adapters.canonical import validate
from adapters.capture import Content, Publish, capture_row
from adapters.delivery import Aliases
from adapters.engine import SyncEngine, _Tally
from adapters.rules import DeliveryAction, content_hash, delivery_action, versions_after_delivery
from router.batches import InvalidRow
from router.clock import Order, compare
from router.events import ChangeEvent, encode, new_event_id, utcnow

INVALID = "invalid"


@dataclass(frozen=True)
class CapturedPage:
    rows: int
    valid: list[str]  # source ids of the rows to announce
    invalid: list[InvalidRow]
    last: str | None
    events: list[bytes] | None = None  # ready to send (None: announce after publishing)


class MigrationWork:
    def __init__(self, engine: SyncEngine) -> None:
        self.engine = engine
        self.adapter = engine.adapter

    # -- source -------------------------------------------------------------------------
    def capture_page(self, entity: str, after: str | None, limit: int) -> CapturedPage:
        """One page by source id: invalid rows set apart, the others through capture."""
        engine = self.engine
        with self.adapter.snapshot() as tx:
            rows = self.adapter.read_page(tx, entity, after, limit)
            valid, invalid = [], []
            for row in rows:
                if row.deleted:
                    continue  # a deleted record is not one to migrate
                try:
                    validate(entity, row.fields)
                except Exception as e:
                    invalid.append(InvalidRow(source_record_id=row.source_record_id, reason=why(e)))
                    continue
                valid.append(row)
            tally = _Tally()
            known = engine._capture_rows(tx, entity, valid, tally)
        last = rows[-1].source_record_id if rows else None
        sids = [r.source_record_id for r in valid]
        # Nothing changed since capture last looked (the usual case): the links read for
        # capture are the versions to announce, with no second read.
        events = self._events(entity, sids, known) if tally.changes == 0 else None
        return CapturedPage(len(rows), sids, invalid, last, events)

    def announce(self, entity: str, source_record_ids: list[str]) -> list[bytes]:
        """The version each link holds, as migration events (after the page's own live
        changes were published: a pending link is announced next time)."""
        with self.adapter.transaction() as tx:
            known = links.by_source(tx, entity, source_record_ids)
        return self._events(entity, source_record_ids, known)

    def _events(
        self, entity: str, source_record_ids: list[str], known: dict[str, links.Link]
    ) -> list[bytes]:
        actor, source = self.engine.actor, self.adapter.name
        out: list[bytes] = []
        for sid in source_record_ids:
            link = known.get(sid)
            if link is None or not link.published or link.deleted:
                continue
            clock = link.clock.to_dict()
            own = clock.get(actor, 0)
            versions = link.field_versions
            counters = (
                dict(versions.counters)
                if versions is not None and versions.actor == actor and own > 0
                else None
            )
            event = ChangeEvent(
                event_id=new_event_id(),
                source=source,
                actor=actor,
                entity=entity,
                record_id=link.record_id,
                source_record_id=sid,
                op="upsert",
                clock=clock,
                fields=link.fields,
                changed=[],
                occurred_at=utcnow(),
                origin="migration",
                field_versions={k: v for k, v in counters.items() if k in link.fields}
                if counters
                else None,
            )
            out.append(encode(event))
        return out

    # -- target -------------------------------------------------------------------------
    def apply(
        self, events: Sequence[ChangeEvent], migration_id: str, linked: set[str]
    ) -> list[str]:
        """Apply a migration batch in one transaction; each record's outcome.

        Records this adapter never had are inserted with one statement per entity (and
        their links with one more): the bulk of a migration into an empty CRM. Every
        other record takes the per-record path with its clock checks and conditional
        write, exactly as a live delivery."""
        with self.adapter.transaction() as tx:
            known = links.by_records(tx, [e.record_id for e in events])
            fresh: dict[str, list[ChangeEvent]] = {}
            for e in events:
                if e.record_id not in known and e.op == "upsert" and e.entity in self.engine.mapped:
                    fresh.setdefault(e.entity, []).append(e)
            outcomes: dict[str, str] = {}
            for entity, group in fresh.items():
                # One record twice in a batch (a redelivery overtook its ack): once here.
                unique = list({e.record_id: e for e in group}.values())
                self._create_many(tx, entity, unique)
                outcomes.update((e.event_id, "created") for e in unique)
            for e in events:
                if e.event_id not in outcomes:
                    outcomes[e.event_id] = self._apply_one(tx, e, linked)
            done = [outcomes[e.event_id] for e in events]
            entries = [(e.entity, e.record_id, o, "") for e, o in zip(events, done, strict=True)]
            log(tx, migration_id, entries, new={e.record_id for g in fresh.values() for e in g})
        return done

    def _create_many(self, tx: Connection, entity: str, group: Sequence[ChangeEvent]) -> None:
        engine = self.engine
        mapped = engine.mapped[entity]
        items = [(e.record_id, {k: v for k, v in e.fields.items() if k in mapped}) for e in group]
        rows = self.adapter.insert_many(tx, entity, items)
        # An integer id the database handed out again may have a journaled delete of the
        # record that held it: that delete goes first, as for a single insert.
        engine.deletes.settle_many(tx, entity, [r.source_record_id for r in rows])
        new = []
        for event, row in zip(group, rows, strict=True):
            fields = engine._validate_written(event, row)
            new.append(
                links.Link(
                    record_id=event.record_id,
                    entity=entity,
                    source_record_id=row.source_record_id,
                    clock=event.vclock,
                    content_hash=content_hash(fields, row.deleted),
                    fields=fields,
                    version=row.version,
                    deleted=row.deleted,
                    field_versions=versions_after_delivery(None, {}, fields, engine.actor),
                )
            )
        links.insert_many(tx, new)

    def apply_single(self, event: ChangeEvent, migration_id: str) -> str:
        with self.adapter.transaction() as tx:
            outcome = self._apply_one(tx, event, set())
            log(tx, migration_id, [(event.entity, event.record_id, outcome, "")])
        return outcome

    def failed(self, event: ChangeEvent, migration_id: str, reason: str) -> None:
        with self.adapter.transaction() as tx:
            log(tx, migration_id, [(event.entity, event.record_id, "failed", reason)], replace=True)

    def _apply_one(self, tx: Connection, event: ChangeEvent, linked: set[str]) -> str:
        before = links.by_record(tx, event.record_id)
        result = self.engine._apply(tx, event)
        if result.action == "not-mapped":
            return "refused"
        if result.action == "applied":
            if before is None or before.source_record_id is None:
                outcome = "created"
            else:
                after = links.by_record(tx, event.record_id)
                same = after is not None and after.content_hash == before.content_hash
                outcome = "unchanged" if same else "updated"
        elif result.action == "skip-stale":
            outcome = "updated" if self._undrift(tx, event, before) else "unchanged"
        else:  # a local change goes first: the hub's resolution follows
            outcome = "updated"
        return "linked" if event.record_id in linked and outcome != "created" else outcome

    def _undrift(self, tx: Connection, event: ChangeEvent, link: links.Link | None) -> bool:
        """A migration makes the target equal the hub: where the row holds other content
        than its link under the same version token (changed behind capture's back; a
        user's edit moves the token and is left to capture), write the hub's version,
        which is the link's own clock. True when it did."""
        if link is None or link.source_record_id is None or link.deleted:
            return False
        if compare(event.vclock, link.clock) is not Order.EQUAL or event.op != "upsert":
            return False
        sid = link.source_record_id
        row = self.adapter.read_record(tx, event.entity, sid, for_update=True)
        if row is None or row.version != link.version:
            return False
        if self.engine._same_content(event.entity, row, link):
            return False
        mapped = self.engine.mapped.get(event.entity, [])
        fields = {k: v for k, v in event.fields.items() if k in mapped}
        back = self.adapter.write_record(
            tx, event.entity, sid, event.record_id, fields, row.version
        )
        self.engine._record_applied(tx, event, link, back)
        return True

    def repair(self, event: ChangeEvent, aliases: Aliases = None) -> str:
        """Write the hub's version over whatever the row holds now, even under a clock
        the link already has: drift is a change capture never saw (a value changed
        without its timestamp, a row deleted with triggers off), so the usual clock
        check would call the delivery a duplicate and leave the drift in place.
        ``aliases`` (the delivery's ``x-crmsync-aliases``): a row still linked under
        the id identity matching aliased is re-keyed and repaired, not written twice."""
        engine = self.engine
        with self.adapter.transaction() as tx:
            link = links.by_record(tx, event.record_id)
            if link is None and aliases:
                link = engine._rekey(tx, event, aliases.get(self.adapter.name))
            if link is None or link.source_record_id is None:
                return engine._apply(tx, event).action
            sid = link.source_record_id
            row = self.adapter.read_record(tx, event.entity, sid, for_update=True)
            mapped = engine.mapped.get(event.entity, [])
            fields = {k: v for k, v in event.fields.items() if k in mapped}
            if (
                row is not None
                and delivery_action(event.vclock, link.clock) is not DeliveryAction.APPLY
                and engine._same_content(event.entity, row, link)
            ):
                return "unchanged"  # no drift on this side
            back: SourceRow | None
            if event.op == "delete":
                if row is None:
                    return "unchanged"
                back = self.adapter.delete_record(tx, event.entity, sid, row.version)
            elif row is None:
                back = self.adapter.write_record(
                    tx, event.entity, None, event.record_id, fields, None
                )
                link = link.evolve(source_record_id=None)
            else:
                back = self.adapter.write_record(
                    tx, event.entity, sid, event.record_id, fields, row.version
                )
            engine._record_applied(tx, event, link, back)
            return "repaired"

    # -- reconcile ----------------------------------------------------------------------
    def digest(
        self, entity: str, fields: Sequence[str], after: str | None, limit: int
    ) -> tuple[list[list[str | None]], str | None]:
        """[record_id, source id, hash of ``fields`` | None (no row) | "invalid",
        "deleted" | ""] for a page of linked records in record-id order."""
        wanted = set(fields)
        t = links.link_table
        query = sa.select(t.c.record_id, t.c.source_record_id, t.c.deleted).where(
            t.c.entity == entity
        )
        if after is not None:
            query = query.where(t.c.record_id > after)
        query = query.order_by(t.c.record_id).limit(limit)
        items: list[list[str | None]] = []
        with self.adapter.transaction() as tx:
            page = list(tx.execute(query))
            sids = [r.source_record_id for r in page if r.source_record_id is not None]
            rows = self.adapter.read_records(tx, entity, sids)
        for r in page:
            row = rows.get(r.source_record_id) if r.source_record_id is not None else None
            if row is None or row.deleted:
                items.append(
                    [r.record_id, r.source_record_id, None, "deleted" if r.deleted else ""]
                )
                continue
            try:
                values = validate(entity, row.fields)
            except Exception:
                items.append([r.record_id, r.source_record_id, INVALID, ""])
                continue
            picked = {k: v for k, v in values.items() if k in wanted}
            items.append([r.record_id, r.source_record_id, content_hash(picked, False), ""])
        last = page[-1].record_id if page else None
        return items, last

    def republish(self, entity: str, record_ids: Sequence[str]) -> tuple[int, list[str]]:
        """Publish these records' rows as new local edits (their content wins as the
        newest version: ``reconcile --prefer``)."""
        engine = self.engine
        published, missing = 0, []
        with self.adapter.transaction() as tx:
            for record_id in record_ids:
                link = links.by_record(tx, record_id)
                row = None
                if link is not None and link.source_record_id is not None:
                    row = self.adapter.read_record(tx, entity, link.source_record_id)
                if link is None or row is None:
                    missing.append(record_id)
                    continue
                content = Content(validate(entity, row.fields), row.deleted, row.version)
                # Forget the hash: the row's content is then a change of its own.
                decision = capture_row(
                    content,
                    link.evolve(content_hash=""),
                    actor=engine.actor,
                    soft_deletes=self.adapter.soft_deletes(entity),
                )
                if isinstance(decision, Publish):
                    engine.outbox.record(tx, entity, row.source_record_id, decision, utcnow())
                    published += 1
        return published, missing


def log(
    tx: Connection,
    migration_id: str,
    entries: Sequence[tuple[str, str, str, str]],
    replace: bool = False,
    new: set[str] | None = None,
) -> None:
    """Log (entity, record_id, outcome, detail): the first outcome of a record stays,
    unless ``replace`` (a failure found later replaces what was logged). ``new``: records
    that had no link until now, so cannot be in the log yet (no need to look)."""
    t = links.migration_log
    if not entries:
        return
    ids = [e[1] for e in entries if not new or e[1] not in new]
    if replace:
        tx.execute(t.delete().where(t.c.migration_id == migration_id, t.c.record_id.in_(ids)))
        have: set[str] = set()
    else:
        have = set()
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            have.update(
                r[0]
                for r in tx.execute(
                    sa.select(t.c.record_id).where(
                        t.c.migration_id == migration_id, t.c.record_id.in_(chunk)
                    )
                )
            )
    rows = {}
    for entity, record_id, outcome, detail in entries:
        if record_id not in have:
            rows[record_id] = {
                "migration_id": migration_id,
                "record_id": record_id,
                "entity": entity,
                "outcome": outcome,
                "detail": detail[:500],
            }
    if rows:
        tx.execute(t.insert(), list(rows.values()))


def summary(
    tx: Connection, migration_id: str, after: str | None, limit: int
) -> tuple[dict[str, dict[str, int]], list[list[str]]]:
    t = links.migration_log
    counts: dict[str, dict[str, int]] = {}
    query = (
        sa.select(t.c.entity, t.c.outcome, sa.func.count())
        .where(t.c.migration_id == migration_id)
        .group_by(t.c.entity, t.c.outcome)
    )
    for entity, outcome, n in tx.execute(query):
        counts.setdefault(entity, {})[outcome] = int(n)
    failed_q = sa.select(t.c.entity, t.c.record_id, t.c.detail).where(
        t.c.migration_id == migration_id, t.c.outcome == "failed"
    )
    if after is not None:
        failed_q = failed_q.where(t.c.record_id > after)
    failed = [list(r) for r in tx.execute(failed_q.order_by(t.c.record_id).limit(limit))]
    return counts, failed
