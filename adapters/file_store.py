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
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from adapters import file_codec as codec
from adapters.file_codec import BadRecord, Frame
from adapters.file_index import BATCH, FileIndex, pending, rows, signature, state


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
                self._undo_torn_append(int(st.append_at))
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
            fresh = all(raw is not None for raw in ops.values()) and not self._indexed(tx, ops)
            at = self.path.stat().st_size if self.path.exists() else 0
            if fresh:  # committed first: a torn append is cut back to it after a crash
                tx.execute(state.update().where(state.c.entity == self.entity).values(append_at=at))
        if fresh:
            start = self._append([raw for raw in ops.values() if raw is not None], at)
        else:
            self._rewrite(ops)
        with engine.begin() as tx:
            if fresh:
                self._index_appended(tx, start)
            else:
                self.refresh(tx)
            # Only the writes this flush put in the file: one staged meanwhile stays.
            tx.execute(
                pending.delete().where(pending.c.entity == self.entity, pending.c.seq <= last)
            )

    def _indexed(self, tx: Connection, sids: dict[str, Any]) -> bool:
        keys = list(sids)
        for start in range(0, len(keys), BATCH):
            query = sa.select(rows.c.sid).where(
                rows.c.entity == self.entity, rows.c.sid.in_(keys[start : start + BATCH])
            )
            if tx.execute(query.limit(1)).first() is not None:
                return True
        return False

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

    def _undo_torn_append(self, at: int) -> None:
        if self.path.exists() and self.path.stat().st_size > at:
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

    def _rewrite(self, ops: dict[str, bytes | None]) -> None:
        tmp = self.path.with_name(f".{self.path.name}.crmsync-tmp")
        left = dict(ops)
        with tmp.open("wb") as out:
            if self.path.exists():
                with self.path.open("rb") as f:
                    self._copy(f, out, left)
            elif self.fmt == "csv":
                out.write(codec.encode_header(self.columns()))
            out.writelines(raw for raw in left.values() if raw is not None)
            out.flush()
            os.fsync(out.fileno())
        if self.path.exists():
            os.chmod(tmp, stat.S_IMODE(self.path.stat().st_mode))  # the export's own mode
        os.replace(tmp, self.path)
        fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)  # the rename itself survives a power cut
        finally:
            os.close(fd)

    def _copy(self, f: Any, out: Any, left: dict[str, bytes | None]) -> None:
        """Every record of ``f`` into ``out``, the pending ones replaced or left out;
        records that cannot be read are copied as they are (they are not ours)."""
        header = None
        for frame in codec.frames(f, self.fmt):
            raw = frame.raw if frame.raw.endswith(b"\n") else frame.raw + b"\n"
            if self.fmt == "csv" and header is None:
                header = codec.header(frame.raw)
                out.write(raw)
                continue
            try:
                sid = codec.decode(self.fmt, header, frame.raw).get(self.id_column)
            except BadRecord:
                sid = None
            key = None if sid is None else str(sid)
            if key is not None and key in left:
                replacement = left.pop(key)
                if replacement is not None:
                    out.write(replacement)
                continue
            out.write(raw)
        if self.fmt == "csv" and header is None:
            out.write(codec.encode_header(self.columns()))
