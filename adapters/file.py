"""``kind = "file"``: a CSV or JSON Lines file of records, per entity (docs/file-adapter.md).

**As a source** (a CRM's export, a CRM with no other access): each record is a line
(CSV: a record, with a header line naming the columns) holding the id column
(``entities.<e>.id``), the mapped columns and optionally a ``deleted`` flag column. The
adapter indexes the file in the links database, one record at a time (constant memory):
id -> byte offset, digest of the record's bytes (its version) and the *revision* at
which those bytes last changed. Capture reads only records of revisions after its cursor,
seeking to each, so a poll of an unchanged file reads nothing and a page
never costs more than its own records. The file is indexed again whenever its signature
(inode, size, mtime) changes: a record whose bytes changed is an update, a record that
disappeared a hard delete (found by the SDK's id comparison), a ``deleted`` flag a soft
delete. A record that cannot be read (not CSV/JSON, wrong number of values, no id, an
id an earlier record has) is skipped and logged with its line number and the reason; a
record whose value breaks the model or a transform is reported by capture with its line
number and field name. Values are never logged. A file that vanished while records of
it are indexed is an outage, never "everything was deleted": capture waits for it.

**As a target** (an export): ``write_record``/``insert_many``/``delete_record`` stage the
record's new bytes in the links database, in the SDK's transaction with the link; after
the commit :class:`~adapters.file_store.FileStore` puts them into the file (an append for
new ids, else an atomic rewrite through a temporary file and a rename) and drops them.
A crash at any point leaves the file whole, without a torn or duplicated record, and
the next start finishes the staged writes. Reads see staged writes, so read-back is what
the file will hold, parsed as the file is parsed: a CSV holds text, so typed fields
need transforms (``type = "integer"`` ...) to come back typed. Inserted records take the
global record id as their id. Columns crmsync does not map are kept as they are.

One writer at a time: programs that change the file while the adapter runs should
replace it whole (write another file, rename it over this one), which capture then sees
as one change.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from adapters import file_codec as codec
from adapters import file_index
from adapters.base import SourceRow, VersionMismatch
from adapters.canonical import InvalidRecord, validate
from adapters.cleansing import Cleansing
from adapters.cursor import Horizon
from adapters.file_index import Located
from adapters.file_store import FileStore
from adapters.linkstore import LinkStoreAdapter
from adapters.mapping import RecordMapping
from router.adapter_config import AdapterConfig, EntityMapping
from router.errors import ConfigError, TransientWriteError
from router.events import Scalar
from router.logs import kv

PAGE = 500
# Capture positions: revision R is the span [R * SPAN, R * SPAN + SPAN - 1], and a
# record of R sits at the span's end. Capture reads from its cursor less the overlap
# (seconds, meant for late commits a file index never has): from inside the span, so
# the next poll starts at R + 1 instead of reading revision R again every poll.
SPAN = 1_000_000


def position(rev: int) -> int:
    return rev * SPAN + SPAN - 1


def first_revision(since: Any) -> int | None:
    """The first revision whose records are at or after ``since`` (None: all)."""
    return None if since is None else math.ceil(since / SPAN)


class _Refused:
    """A value that cannot be read: canonical validation turns it into
    :class:`InvalidRecord` (via ``str``), so capture skips and reports the record under
    the key this sits at (``line N``), and a read-back dead-letters the write."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __str__(self) -> str:
        raise InvalidRecord(self.reason)


@dataclass
class _Entity:
    name: str
    mapping: EntityMapping
    mapper: RecordMapping
    store: FileStore


class FileAdapter(LinkStoreAdapter):
    def __init__(self, config: AdapterConfig, where: str = "adapter config") -> None:
        super().__init__(config.links_url, where)
        self.name = config.name
        self.config = config
        self.cleansing = Cleansing.from_config(config.canonical)
        self.log = logging.getLogger(f"crmsync.adapter.{self.name}")
        self.files: dict[str, _Entity] = {}
        paths: dict[Path, str] = {}
        for entity, mapping in config.entities.items():
            assert mapping.path is not None  # AdapterConfig: file entities name one
            mapper = RecordMapping(entity, mapping)
            taken = {mapping.id, mapping.deleted or mapping.id} & set(mapper.columns)
            if taken:
                raise ConfigError(
                    f"{where}: entities.{entity}.fields: column {sorted(taken)[0]!r} is the "
                    "id or deleted column; map it as one of those only"
                )
            other = paths.setdefault(mapping.path.resolve(), entity)
            if other != entity:
                raise ConfigError(
                    f"{where}: entities.{entity}.path: the file of entities.{other} as well"
                )
            deleted = (mapping.deleted, mapping.deleted_value) if mapping.deleted else None
            store = FileStore(
                self.name,
                entity,
                mapping.path,
                mapping.file_format(),
                mapping.id,
                deleted,
                mapper.columns,
            )
            self.files[entity] = _Entity(entity, mapping, mapper, store)
        self.create_links()
        with self.engine.begin() as conn:
            file_index.metadata.create_all(conn)
        # Writes a crash left staged go into the files now.
        self._dirty: set[str] = set(self.files)
        self._flush()

    # -- transactions: staged writes reach the file after each commit ---------------------
    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        with super().transaction() as tx:
            yield tx
        self._flush()

    def _flush(self) -> None:
        for entity in sorted(self._dirty):
            try:
                self.files[entity].store.flush(self.engine)
            except (OSError, TransientWriteError, sa.exc.DBAPIError) as e:
                # Staged writes are durable and reads see them; the next commit retries.
                self.log.warning(
                    "staged writes not in the file yet",
                    extra=kv(adapter=self.name, entity=entity, error=type(e).__name__),
                )
                continue
            self._dirty.discard(entity)

    # -- reading ----------------------------------------------------------------------------
    def entities(self) -> dict[str, list[str]]:
        return {entity: e.mapper.field_names for entity, e in self.files.items()}

    def _row(self, e: _Entity, at: Located) -> SourceRow:
        record = codec.decode(e.store.fmt, e.store.columns(), at.raw)
        where = f"line {at.line}" if at.line else "staged write"
        fields: dict[str, Any]
        try:
            fields = e.mapper.read(record)
            validate(e.name, fields, self.cleansing)
        except InvalidRecord as err:  # a transform's refusal included (its marker)
            fields = {where: _Refused(str(err))}
        return SourceRow(
            entity=e.name,
            source_record_id=at.sid,
            fields=fields,
            deleted=at.deleted,
            version=codec.digest(at.raw),
            position=position(at.rev),
        )

    def _rows(self, tx: Connection, e: _Entity, sids: Sequence[str]) -> list[SourceRow]:
        found = e.store.locate(tx, sids)
        return [self._row(e, at) for sid in sids if (at := found.get(sid)) is not None]

    def _open(self, tx: Connection, entity: str) -> _Entity:
        e = self.files[entity]
        e.store.refresh(tx)
        return e

    def horizon(self, tx: Connection, entity: str) -> Horizon:
        return Horizon(position(self._open(tx, entity).store.revision(tx)))

    def read_changes(
        self, tx: Connection, entity: str, since: Any, after: tuple[Any, str] | None, limit: int
    ) -> list[SourceRow]:
        e = self._open(tx, entity)
        keyset = None if after is None else (int(after[0]) // SPAN, after[1])
        return self._rows(tx, e, e.store.changed(tx, first_revision(since), keyset, limit))

    def read_record(
        self, tx: Connection, entity: str, source_record_id: str, for_update: bool = False
    ) -> SourceRow | None:
        rows = self._rows(tx, self._open(tx, entity), [source_record_id])
        return rows[0] if rows else None

    def read_records(
        self, tx: Connection, entity: str, source_record_ids: Sequence[str]
    ) -> dict[str, SourceRow]:
        rows = self._rows(tx, self._open(tx, entity), source_record_ids)
        return {row.source_record_id: row for row in rows}

    def read_page(
        self, tx: Connection, entity: str, after: str | None, limit: int
    ) -> list[SourceRow]:
        e = self._open(tx, entity)
        return self._rows(tx, e, e.store.page(tx, after, limit))

    def list_all(self, tx: Connection, entity: str) -> Iterator[SourceRow]:
        after: str | None = None
        while True:
            page = self.read_page(tx, entity, after, PAGE)
            yield from page
            if len(page) < PAGE:
                return
            after = page[-1].source_record_id

    def count_rows(self, tx: Connection, entity: str) -> int | None:
        return self._open(tx, entity).store.count(tx)

    def soft_deletes(self, entity: str) -> bool:
        return self.files[entity].mapping.deleted is not None

    def list_ids(self, tx: Connection, entity: str) -> set[str] | None:
        if self.soft_deletes(entity):
            return None
        e = self._open(tx, entity)
        ids: set[str] = set()
        after: str | None = None
        while page := e.store.page(tx, after, PAGE):
            ids.update(page)
            after = page[-1]
        return ids

    def existing_ids(
        self, tx: Connection, entity: str, source_record_ids: Sequence[str]
    ) -> set[str] | None:
        if self.soft_deletes(entity):
            return None
        return self._open(tx, entity).store.present(tx, source_record_ids)

    # -- writing ----------------------------------------------------------------------------
    def _writable(self, e: _Entity) -> None:
        folder = e.store.path.parent
        if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
            raise TransientWriteError(f"entities.{e.name}.path: its folder is not reachable")

    def _current(
        self, tx: Connection, e: _Entity, sid: str, expected_version: str | None
    ) -> Located | None:
        at = e.store.locate(tx, [sid]).get(sid)
        if at is not None and expected_version not in (None, codec.digest(at.raw)):
            raise VersionMismatch(self._row(e, at))
        return at

    def _stage(self, tx: Connection, e: _Entity, sid: str, record: dict[str, Any]) -> SourceRow:
        return self._stage_many(tx, e, [(sid, record)])[0]

    def _stage_many(
        self, tx: Connection, e: _Entity, records: list[tuple[str, dict[str, Any]]]
    ) -> list[SourceRow]:
        staged = [(sid, codec.encode(e.store.fmt, e.store.columns(), r)) for sid, r in records]
        e.store.stage(tx, staged)
        self._dirty.add(e.name)
        rev = e.store.revision(tx)
        return [
            self._row(e, Located(sid, raw, 0, rev, e.store.is_deleted(record)))
            for (sid, raw), (_, record) in zip(staged, records, strict=True)
        ]

    def _record(
        self, e: _Entity, sid: str, current: Located | None, fields: dict[str, Scalar]
    ) -> dict[str, Any]:
        """The record to write: the current one (unmapped columns kept) with ``fields``."""
        columns = e.mapper.write(dict(fields))  # PermanentWriteError: a transform refused
        base = codec.decode(e.store.fmt, e.store.columns(), current.raw) if current else {}
        record: dict[str, Any] = {e.mapping.id: sid, **base, **columns}
        if e.mapping.deleted is not None:
            record[e.mapping.deleted] = not e.mapping.deleted_value
        return record

    def write_record(
        self,
        tx: Connection,
        entity: str,
        source_record_id: str | None,
        record_id: str,
        fields: dict[str, Scalar],
        expected_version: str | None,
    ) -> SourceRow:
        e = self.files[entity]
        self._writable(e)
        e.store.refresh(tx)
        sid = source_record_id or record_id
        current = self._current(tx, e, sid, expected_version)
        if source_record_id is not None and current is None:
            raise VersionMismatch(None)
        # An insert whose id is there already (a write redone after a crash) replaces it.
        return self._stage(tx, e, sid, self._record(e, sid, current, fields))

    def insert_many(
        self, tx: Connection, entity: str, items: Sequence[tuple[str, dict[str, Scalar]]]
    ) -> list[SourceRow]:
        """One lookup and one staging statement for the batch (a migration's)."""
        e = self.files[entity]
        self._writable(e)
        e.store.refresh(tx)
        current = e.store.locate(tx, [record_id for record_id, _ in items])
        records = [(rid, self._record(e, rid, current.get(rid), f)) for rid, f in items]
        return self._stage_many(tx, e, records)

    def delete_record(
        self, tx: Connection, entity: str, source_record_id: str, expected_version: str | None
    ) -> SourceRow | None:
        e = self.files[entity]
        self._writable(e)
        e.store.refresh(tx)
        current = self._current(tx, e, source_record_id, expected_version)
        if current is None:
            return None  # already gone: the delete is done
        if e.mapping.deleted is None:
            e.store.stage(tx, [(source_record_id, None)])
            self._dirty.add(entity)
            return None
        record = codec.decode(e.store.fmt, e.store.columns(), current.raw)
        record[e.mapping.deleted] = e.mapping.deleted_value
        return self._stage(tx, e, source_record_id, record)
