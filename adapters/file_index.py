"""The file adapter's index of a file, in the links database (see :mod:`adapters.file`).

* ``crmsync_file_row``: one row per record of the file: its id, byte offset and length,
  line number, digest (the version token), deleted flag and the *revision* at which its
  bytes last changed. A record is read by seeking to its offset, so paging and capture
  never re-read the file from the start; the file is read whole only when its signature
  (inode, size, mtime) changed, one record at a time (constant memory).
* ``crmsync_file_state``: per entity the file's signature as last indexed, the current
  revision, the CSV header, and the offset of an append in progress.
* ``crmsync_file_pending``: writes committed with their links but not yet in the file
  (:mod:`adapters.file_store`); reads see them.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from adapters import file_codec as codec
from adapters.file_codec import BadRecord, Format, Frame
from router.errors import TransientWriteError
from router.logs import kv

metadata = sa.MetaData()

rows = sa.Table(
    "crmsync_file_row",
    metadata,
    sa.Column("entity", sa.String(64), primary_key=True),
    sa.Column("sid", sa.String(255), primary_key=True),
    sa.Column("offset", sa.BigInteger, nullable=False),
    sa.Column("length", sa.Integer, nullable=False),
    sa.Column("line", sa.Integer, nullable=False),
    sa.Column("digest", sa.String(32), nullable=False),
    sa.Column("deleted", sa.Boolean, nullable=False),
    sa.Column("rev", sa.BigInteger, nullable=False),
    sa.Column("gen", sa.BigInteger, nullable=False),  # the scan that last saw it
)
sa.Index("crmsync_file_row_rev", rows.c.entity, rows.c.rev, rows.c.sid)

state = sa.Table(
    "crmsync_file_state",
    metadata,
    sa.Column("entity", sa.String(64), primary_key=True),
    sa.Column("signature", sa.String(128), nullable=True),
    sa.Column("rev", sa.BigInteger, nullable=False),
    sa.Column("gen", sa.BigInteger, nullable=False),
    sa.Column("header", sa.Text, nullable=True),  # CSV: the columns, as JSON
    sa.Column("append_at", sa.BigInteger, nullable=True),
    sa.Column("next_line", sa.BigInteger, nullable=False, default=1),
)

pending = sa.Table(
    "crmsync_file_pending",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("entity", sa.String(64), nullable=False),
    sa.Column("sid", sa.String(255), nullable=False),
    sa.Column("raw", sa.LargeBinary, nullable=True),  # None: the record is removed
)
# Reads look staged writes up by id; they pile up while the file is unreachable.
sa.Index("crmsync_file_pending_sid", pending.c.entity, pending.c.sid)

BATCH = 500  # ids per query (bind-parameter limits)


@dataclass(frozen=True)
class Located:
    """A record's bytes as the file (or a pending write) holds them."""

    sid: str
    raw: bytes
    line: int  # 0: not in the file yet (a pending write)
    rev: int
    deleted: bool


def signature(path: Path) -> str | None:
    try:
        return stat_signature(path.stat())
    except FileNotFoundError:
        return None


def stat_signature(st: os.stat_result) -> str:
    return f"{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"


class FileIndex:
    """One entity's file and its index (reads; writes: FileStore)."""

    def __init__(
        self,
        adapter: str,
        entity: str,
        path: Path,
        fmt: Format,
        id_column: str,
        deleted: tuple[str, bool] | None,
        columns: list[str],
    ) -> None:
        self.adapter = adapter
        self.entity = entity
        self.path = path
        self.fmt = fmt
        self.id_column = id_column
        self.deleted = deleted  # (column, the value that means deleted)
        self.new_header = [id_column, *[c for c in columns if c != id_column]]
        if deleted is not None and deleted[0] not in self.new_header:
            self.new_header.append(deleted[0])
        self.header: list[str] | None = None
        self.bad_lines = 0
        self.log = logging.getLogger(f"crmsync.adapter.{adapter}")

    # -- the index ------------------------------------------------------------------------
    def _state(self, tx: Connection) -> sa.Row[Any]:
        row = tx.execute(sa.select(state).where(state.c.entity == self.entity)).first()
        if row is None:
            tx.execute(state.insert().values(entity=self.entity, rev=0, gen=0, next_line=1))
            row = tx.execute(sa.select(state).where(state.c.entity == self.entity)).one()
        return row

    def revision(self, tx: Connection) -> int:
        return int(self._state(tx).rev)

    def refresh(self, tx: Connection) -> None:
        """Index the file again if it changed since it was last indexed."""
        st = self._state(tx)
        if st.header is not None and self.header is None:
            self.header = json.loads(st.header)
        sig = signature(self.path)
        if sig is None:
            known = tx.execute(
                sa.select(sa.func.count()).select_from(rows).where(rows.c.entity == self.entity)
            ).scalar_one()
            if known:
                # Never read a vanished file as "every record deleted": an export being
                # replaced, a mount gone. Capture waits until it is back.
                raise TransientWriteError(f"entities.{self.entity}.path: the file is missing")
            return
        if sig != st.signature:
            try:
                self._scan(tx, st)
            except OSError as e:
                raise self.unreadable(e) from e

    def unreadable(self, err: OSError) -> TransientWriteError:
        """A file the adapter cannot read now (permissions, a mount away): retried."""
        return TransientWriteError(
            f"entities.{self.entity}.path: cannot read the file ({type(err).__name__})"
        )

    def _scan(self, tx: Connection, st: sa.Row[Any]) -> None:
        rev, gen = int(st.rev) + 1, int(st.gen) + 1
        header: list[str] | None = None
        batch: list[tuple[Frame, str, bool]] = []
        seen: set[str] = set()  # ids of the batch in hand (duplicates across batches: gen)
        next_line = 1
        with self.path.open("rb") as f:
            sig = stat_signature(os.fstat(f.fileno()))  # of the file read, even if replaced now
            for frame in codec.frames(f, self.fmt):
                next_line = frame.line + frame.raw.count(b"\n")
                try:
                    if self.fmt == "csv" and header is None:
                        header = codec.header(frame.raw)
                        self._check_header(header)
                        continue
                    record = codec.decode(self.fmt, header, frame.raw)
                    sid = record.get(self.id_column)
                    if sid is None or sid == "" or isinstance(sid, (dict, list, bool)):
                        raise BadRecord(f"no value in the id column {self.id_column!r}")
                    sid = str(sid)
                    if sid in seen:
                        raise BadRecord("an id an earlier record has (the first one counts)")
                except BadRecord as e:
                    self._bad(frame.line, str(e))
                    continue
                seen.add(sid)
                batch.append((frame, sid, self.is_deleted(record)))
                if len(batch) >= BATCH:
                    self._index(tx, batch, rev, gen)
                    batch, seen = [], set()
        self._index(tx, batch, rev, gen)
        tx.execute(rows.delete().where(rows.c.entity == self.entity, rows.c.gen < gen))
        if header is not None:
            self.header = header
        tx.execute(
            state.update()
            .where(state.c.entity == self.entity)
            .values(
                signature=sig,
                rev=rev,
                gen=gen,
                header=json.dumps(self.header) if self.header is not None else None,
                next_line=next_line,
            )
        )

    def _check_header(self, header: list[str]) -> None:
        missing = [c for c in self.new_header if c not in header]
        if missing:
            # Not a ConfigError: the file may be replaced by a right one while we run.
            raise TransientWriteError(
                f"entities.{self.entity}.path: the CSV header lacks column(s) "
                f"{', '.join(missing)} (entities.{self.entity}.fields)"
            )

    def _bad(self, line: int, reason: str) -> None:
        self.bad_lines += 1
        self.log.warning(
            "file record skipped, not read",
            extra=kv(adapter=self.adapter, entity=self.entity, line=line, reason=reason),
        )

    def is_deleted(self, record: dict[str, Any]) -> bool:
        if self.deleted is None:
            return False
        column, meaning = self.deleted
        value = record.get(column)
        return value is not None and codec.is_true(value) == meaning

    def _index(
        self, tx: Connection, batch: list[tuple[Frame, str, bool]], rev: int, gen: int
    ) -> None:
        if not batch:
            return
        sids = [sid for _, sid, _ in batch]
        query = sa.select(rows.c.sid, rows.c.digest, rows.c.rev, rows.c.gen).where(
            rows.c.entity == self.entity, rows.c.sid.in_(sids)
        )
        old = {r.sid: (r.digest, r.rev, r.gen) for r in tx.execute(query)}
        doubles = {sid for sid, (_, _, seen) in old.items() if seen == gen}
        fresh = [sid for sid in sids if sid not in doubles]
        tx.execute(rows.delete().where(rows.c.entity == self.entity, rows.c.sid.in_(fresh)))
        values = []
        for frame, sid, deleted in batch:
            if sid in doubles:  # an earlier batch of this scan indexed the id
                self._bad(frame.line, "an id an earlier record has (the first one counts)")
                continue
            known = old.get(sid)
            d = frame.digest
            values.append(
                {
                    "entity": self.entity,
                    "sid": sid,
                    "offset": frame.offset,
                    "length": frame.length,
                    "line": frame.line,
                    "digest": d,
                    "deleted": deleted,
                    # Unchanged bytes keep their revision: capture does not re-read them.
                    "rev": known[1] if known is not None and known[0] == d else rev,
                    "gen": gen,
                }
            )
        if values:
            tx.execute(rows.insert(), values)

    # -- reading records ----------------------------------------------------------------
    def locate(
        self, tx: Connection, sids: Sequence[str], again: bool = True
    ) -> dict[str, Located | None]:
        """The records of these ids (None: a staged removal); ids absent are unknown."""
        found: dict[str, Located | None] = {}
        for start in range(0, len(sids), BATCH):
            part = list(sids[start : start + BATCH])
            query = sa.select(rows).where(rows.c.entity == self.entity, rows.c.sid.in_(part))
            indexed = list(tx.execute(query))
            if indexed:
                try:
                    f = self.path.open("rb")
                except OSError as e:
                    raise self.unreadable(e) from e
                with f:
                    for r in indexed:
                        f.seek(r.offset)
                        raw = f.read(r.length)
                        if codec.digest(raw) != r.digest:
                            # Changed without changing its signature (same size within
                            # the clock's tick): index it again, once.
                            if not again:
                                raise TransientWriteError(
                                    f"entities.{self.entity}.path: the file changes while read"
                                )
                            self._scan(tx, self._state(tx))
                            return self.locate(tx, sids, again=False)
                        found[r.sid] = Located(r.sid, raw, r.line, int(r.rev), bool(r.deleted))
            for sid, staged in self._pending(tx, part).items():
                known = found.get(sid)
                rev = known.rev if known is not None else self.revision(tx)
                found[sid] = (
                    None
                    if staged is None
                    else Located(sid, staged, 0, rev, self._raw_deleted(staged))
                )
        return found

    def _raw_deleted(self, raw: bytes) -> bool:
        return self.is_deleted(codec.decode(self.fmt, self.header, raw))

    def _pending(self, tx: Connection, sids: list[str]) -> dict[str, bytes | None]:
        query = (
            sa.select(pending.c.sid, pending.c.raw)
            .where(pending.c.entity == self.entity, pending.c.sid.in_(sids))
            .order_by(pending.c.seq)
        )
        return {r.sid: r.raw for r in tx.execute(query)}  # the last write of each id

    def changed(
        self, tx: Connection, since: int | None, after: tuple[int, str] | None, limit: int
    ) -> list[str]:
        """Ids of records of revision ``since`` or later (None: all), in (rev, id) order,
        strictly after the keyset ``after``."""
        query = sa.select(rows.c.sid).where(rows.c.entity == self.entity)
        if since is not None:
            query = query.where(rows.c.rev >= since)
        if after is not None:
            rev, sid = after
            query = query.where(
                sa.or_(rows.c.rev > rev, sa.and_(rows.c.rev == rev, rows.c.sid > sid))
            )
        query = query.order_by(rows.c.rev, rows.c.sid).limit(limit)
        return [r.sid for r in tx.execute(query)]

    def page(self, tx: Connection, after: str | None, limit: int) -> list[str]:
        query = sa.select(rows.c.sid).where(rows.c.entity == self.entity)
        if after is not None:
            query = query.where(rows.c.sid > after)
        return [r.sid for r in tx.execute(query.order_by(rows.c.sid).limit(limit))]

    def present(self, tx: Connection, sids: Sequence[str]) -> set[str]:
        """Which of these ids have a record (staged writes included), from the index."""
        found: set[str] = set()
        for start in range(0, len(sids), BATCH):
            part = list(sids[start : start + BATCH])
            query = sa.select(rows.c.sid).where(rows.c.entity == self.entity, rows.c.sid.in_(part))
            found.update(r.sid for r in tx.execute(query))
            for sid, staged in self._pending(tx, part).items():
                (found.add if staged is not None else found.discard)(sid)
        return found

    def count(self, tx: Connection) -> int:
        query = sa.select(sa.func.count()).select_from(rows)
        query = query.where(rows.c.entity == self.entity, rows.c.deleted == sa.false())
        return int(tx.execute(query).scalar_one())

    def columns(self) -> list[str]:
        return self.header if self.header is not None else self.new_header
