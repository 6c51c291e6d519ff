"""Hard deletes: rows removed from the CRM's tables become delete events.

Two ways to know, per entity:

* **the delete journal** (:mod:`adapters.journal`, ``capture.delete_journal = true``, the
  default): each capture page first drains the journaled ids, in the same snapshot as its
  row read, so a delete and an insert reusing the id between two polls read as what they
  are: the old record's delete (its link lets go of the id), then a new record. A
  delivery that inserts a row settles that id's journal first too: the database may hand
  an insert a freed id (SQLite reuses the highest), and the old row's entry must not be
  taken later for a delete of the new one.
* **the incremental id comparison** (``delete_journal = false``, where triggers are not
  allowed): each scan compares one chunk of live links (keyset on the link's id,
  ``capture.hard_delete_chunk``) with the ids present in the table, so memory and time
  per poll stay bounded whatever the table's size; a delete is found within
  ceil(links / chunk) scans. It cannot tell a reused id from the old row.

With the journal, the comparison still runs one round after each start: it finds rows
the journal never saw (deleted before the trigger was installed, e.g. just before an
upgrade, or by a ``TRUNCATE``, which fires no row trigger). Either order of the two is
safe: whichever sees a delete first records it, the other finds a tombstone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.engine import Connection

from adapters import journal, links
from adapters.base import Adapter
from adapters.capture import journaled_delete, row_gone
from adapters.outbox import Outbox


@dataclass(frozen=True)
class Drained:
    entries: int  # journal entries handled (and removed)
    published: int  # delete events recorded in the outbox
    more: bool = False  # the batch was full: more entries wait


def missing(chunk: Sequence[str], present: set[str]) -> list[str]:
    """The ids of ``chunk`` (live links) whose rows are gone."""
    return [sid for sid in chunk if sid not in present]


def next_start(chunk: Sequence[str], size: int) -> str | None:
    """Where the next scan step starts: after this chunk's last id, or from the first
    again once a short chunk says the links are done."""
    return chunk[-1] if len(chunk) >= size else None


class HardDeletes:
    def __init__(self, adapter: Adapter, outbox: Outbox, chunk: int, batch: int) -> None:
        self.adapter = adapter
        self.outbox = outbox
        self.chunk = chunk
        self.batch = batch  # journal entries per page
        self._scan_after: dict[str, str | None] = {}
        self._round_done: set[str] = set()  # journaled entities past their start round

    # -- the journal ----------------------------------------------------------------------
    def drain(self, tx: Connection, entity: str) -> Drained:
        """Handle the oldest journaled deletes of ``entity``. While more wait, the page
        must not read rows: one could reuse an id whose delete is not handled yet."""
        if not self.adapter.journals_deletes(entity):
            return Drained(0, 0)
        entries = journal.oldest(tx, entity, self.batch)
        published = self._handle(tx, entity, entries)
        return Drained(len(entries), published, len(entries) >= self.batch)

    def settle(self, tx: Connection, entity: str, source_record_id: str) -> Drained:
        """Handle the journaled deletes of one id before it is read or reused."""
        if not self.adapter.journals_deletes(entity):
            return Drained(0, 0)
        entries = journal.of_source(tx, entity, source_record_id)
        return Drained(len(entries), self._handle(tx, entity, entries))

    def settle_many(self, tx: Connection, entity: str, source_record_ids: Sequence[str]) -> int:
        """:meth:`settle` for the rows of a bulk insert: local changes published."""
        if not self.adapter.journals_deletes(entity) or not source_record_ids:
            return 0
        entries = journal.of_sources(tx, entity, source_record_ids)
        return self._handle(tx, entity, entries) if entries else 0

    def _handle(self, tx: Connection, entity: str, entries: Sequence[journal.Deleted]) -> int:
        sids = list(dict.fromkeys(e.source_record_id for e in entries))
        known = links.by_source(tx, entity, sids)
        published = 0
        for sid in sids:
            link = known.get(sid)
            if link is None:
                continue  # never shared (or deleted before capture saw it)
            change = journaled_delete(link, actor=self.outbox.actor)
            if change is None:
                links.save(tx, link.evolve(source_record_id=None))  # a tombstone already
                continue
            self.outbox.record(tx, entity, sid, change, datetime.now(UTC), keep_id=False)
            published += 1
        journal.forget(tx, entries)
        return published

    # -- the fallback: compare ids, one chunk per scan --------------------------------------
    def scan(self) -> int:
        """One step of the id comparison for each entity without a journal (or in its
        round after start); returns the delete events recorded."""
        found = 0
        for entity in self.adapter.entities():
            journaled = self.adapter.journals_deletes(entity)
            if self.adapter.soft_deletes(entity) or (journaled and entity in self._round_done):
                continue
            with self.adapter.transaction() as tx:
                chunk = links.live_chunk(tx, entity, self._scan_after.get(entity), self.chunk)
                present = self.adapter.existing_ids(tx, entity, chunk)
                if present is None:
                    continue
                gone = missing(chunk, present)
                known = links.by_source(tx, entity, gone)
                for sid in gone:
                    change = row_gone(known[sid], actor=self.outbox.actor)
                    self.outbox.record(tx, entity, sid, change, datetime.now(UTC))
                    found += 1
            self._scan_after[entity] = next_start(chunk, self.chunk)
            if journaled and self._scan_after[entity] is None:
                self._round_done.add(entity)
        return found
