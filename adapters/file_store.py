"""The file adapter's writes: staged in the links database, then put into the file.

A write is staged (``crmsync_file_pending``) in the SDK's transaction with its link;
:meth:`FileStore.flush` puts the staged writes into the file after the commit and drops
them; after a crash it runs again at start. Putting one in is idempotent (a record's
line replaces the line of its id), so a flush cut short is simply done again.

A flush appends when every staged write is a new id (an export being filled): it first
commits the offset it appends at, and a restart truncates a torn append back to it.
Anything else rewrites the file into a temporary file beside it and renames that over
the file (atomic), then indexes it again. Either way the file never holds a torn or a
duplicated record.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Sequence
from typing import BinaryIO

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from adapters import file_codec as codec
from adapters.file_codec import Frame
from adapters.file_index import BATCH, FileIndex, pending, rows, signature, stat_signature, state
from router.errors import TransientWriteError


class FileStore(FileIndex):
    """One entity's file: its index, and the writes into it."""

    # -- writing ---------------------------------------------------------------------------
    def stage(self, tx: Connection, writes: Sequence[tuple[str, bytes | None]]) -> None:
        """Writes of records (an id, its bytes; None: remove it), committed with ``tx``."""
        if writes:
            rows_ = [{"entity": self.entity, "sid": sid, "raw": raw} for sid, raw in writes]
            tx.execute(pending.insert(), rows_)

    def flush(self, engine: sa.Engine) -> None:
        """Put the pending writes into the file (after their commit, or after a crash)."""
        with engine.begin() as tx:
            st = self._state(tx)
            if st.append_at is not None:
                self._undo_torn_append(int(st.append_at), st.signature)
                tx.execute(
                    state.update().where(state.c.entity == self.entity).values(append_at=None)
                )
            self.refresh(tx)
            query = (
                sa.select(pending.c.seq, pending.c.sid, pending.c.raw)
                .where(pending.c.entity == self.entity)
                .order_by(pending.c.seq)
            )
            ops: dict[str, bytes | None] = {}
            last = 0
            for r in tx.execute(query):
                ops[r.sid], last = r.raw, r.seq  # the last write of each id counts
            if not ops:
                return
            spans = self._spans(tx, list(ops))
            fresh = all(raw is not None for raw in ops.values()) and not spans
            at = self.path.stat().st_size if self.path.exists() else 0
            if fresh:  # committed first: a torn append is cut back to it after a crash
                tx.execute(state.update().where(state.c.entity == self.entity).values(append_at=at))
            indexed = signature(self.path)
        if fresh:
            start = self._append([raw for raw in ops.values() if raw is not None], at)
        else:
            self._rewrite(ops, spans, indexed)
        with engine.begin() as tx:
            if fresh:
                self._index_appended(tx, start)
            else:
                self.refresh(tx)
            # Only the writes this flush put in the file: one staged meanwhile stays.
            tx.execute(
                pending.delete().where(pending.c.entity == self.entity, pending.c.seq <= last)
            )

    def _spans(self, tx: Connection, sids: list[str]) -> list[tuple[int, int, str, str]]:
        """Where the indexed records of these ids sit: (offset, length, digest, id), in
        file order."""
        found = []
        for start in range(0, len(sids), BATCH):
            query = sa.select(rows.c.offset, rows.c.length, rows.c.digest, rows.c.sid).where(
                rows.c.entity == self.entity, rows.c.sid.in_(sids[start : start + BATCH])
            )
            found += [(int(r.offset), int(r.length), r.digest, r.sid) for r in tx.execute(query)]
        return sorted(found)

    def _index_appended(self, tx: Connection, start: int) -> None:
        """Index the records an append added (the rest of the file is as indexed)."""
        st = self._state(tx)
        rev, gen = int(st.rev) + 1, int(st.gen)
        batch: list[tuple[Frame, str, bool]] = []
        line = int(st.next_line)
        with self.path.open("rb") as f:
            for frame in codec.frames(f, self.fmt, offset=start, line=line):
                line = frame.line + frame.raw.count(b"\n")
                record = codec.decode(self.fmt, self.header, frame.raw)
                batch.append((frame, str(record[self.id_column]), self.is_deleted(record)))
                if len(batch) >= BATCH:
                    self._index(tx, batch, rev, gen)
                    batch = []
        self._index(tx, batch, rev, gen)
        tx.execute(
            state.update()
            .where(state.c.entity == self.entity)
            .values(
                signature=signature(self.path),
                rev=rev,
                next_line=line,
                append_at=None,
                header=json.dumps(self.header) if self.header is not None else None,
            )
        )

    def _undo_torn_append(self, at: int, before: str | None) -> None:
        """Cut the file back to where a crashed append began, if it is still the file
        appended to (a file put in its place since is not ours to cut; none before: the
        append created it)."""
        now = signature(self.path)
        if now is None or (before is not None and now.split(":")[0] != before.split(":")[0]):
            return
        if self.path.stat().st_size > at:
            with self.path.open("r+b") as f:
                f.truncate(at)
                os.fsync(f.fileno())

    def _append(self, lines: list[bytes], at: int) -> int:
        """Append ``lines`` at ``at`` (the end); where the first of them starts."""
        with self.path.open("ab") as f:
            start = at
            if at == 0 and self.fmt == "csv":
                head = codec.encode_header(self.columns())
                f.write(head)
                start += len(head)
                self.header = self.columns()
            elif at > 0 and not self._ends_with_newline():
                f.write(b"\n")
                start += 1
            f.writelines(lines)
            f.flush()
            os.fsync(f.fileno())
        return start

    def _ends_with_newline(self) -> bool:
        with self.path.open("rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1) == b"\n"

    def _rewrite(
        self,
        ops: dict[str, bytes | None],
        spans: list[tuple[int, int, str, str]],
        indexed: str | None,
    ) -> None:
        """The file with the records at ``spans`` replaced (or left out) and the other
        writes appended, byte ranges copied as they are: nothing else is parsed."""
        tmp = self.path.with_name(f".{self.path.name}.crmsync-tmp")
        try:
            with tmp.open("wb") as out:
                tail = self._copy(out, ops, spans, indexed)
                if tail not in (b"", b"\n"):
                    out.write(b"\n")  # a last record without its line end
                placed = {sid for *_, sid in spans}
                out.writelines(r for sid, r in ops.items() if r is not None and sid not in placed)
                out.flush()
                os.fsync(out.fileno())
            if self.path.exists():
                os.chmod(tmp, stat.S_IMODE(self.path.stat().st_mode))  # the export's own mode
            os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)
        fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)  # the rename itself survives a power cut
        finally:
            os.close(fd)

    def _copy(
        self,
        out: BinaryIO,
        ops: dict[str, bytes | None],
        spans: list[tuple[int, int, str, str]],
        indexed: str | None,
    ) -> bytes:
        """The file into ``out`` with the spans' records replaced; the last byte copied."""
        if not self.path.exists() or self.path.stat().st_size == 0:
            if self.fmt == "csv":
                out.write(codec.encode_header(self.columns()))
            return b"\n"
        with self.path.open("rb") as f:
            if stat_signature(os.fstat(f.fileno())) != indexed:
                # Changed since it was indexed: the spans may be wrong. Index it first.
                raise TransientWriteError(f"entities.{self.entity}.path: changed while written")
            pos = 0
            for offset, length, digest, sid in spans:
                _copy_range(f, out, pos, offset - pos)
                f.seek(offset)
                if codec.digest(f.read(length)) != digest:
                    raise TransientWriteError(f"entities.{self.entity}.path: changed while written")
                replacement = ops[sid]
                if replacement is not None:
                    out.write(replacement)
                pos = offset + length
            size = os.fstat(f.fileno()).st_size
            _copy_range(f, out, pos, size - pos)
            if size == 0:
                return b"\n"
            f.seek(size - 1)
            return f.read(1) if size > pos or not spans else b"\n"


def _copy_range(f: BinaryIO, out: BinaryIO, start: int, length: int) -> None:
    f.seek(start)
    while length > 0:
        chunk = f.read(min(length, 1 << 20))
        if not chunk:
            return
        out.write(chunk)
        length -= len(chunk)
