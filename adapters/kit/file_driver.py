"""The kit's CRM driver for ``kind = "file"``: a user's edits as an exporter makes them.

Each change writes the whole file anew beside it and renames it over the old one, the
way an export job replaces its output. An outage moves the file's folder away (so the
folder must hold the files only: not the working directory, not the state).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from adapters import file_codec as codec
from adapters.base import Adapter
from adapters.file import FileAdapter
from adapters.kit.driver import KitSetupError
from router.adapter_config import AdapterConfig
from router.events import Scalar

_TYPED = ("bool", "integer", "number", "decimal", "date", "datetime")


class FileDriver:
    def __init__(self, config: AdapterConfig, adapter: Adapter) -> None:
        assert isinstance(adapter, FileAdapter)
        self.adapter = adapter

    def _replace(self, entity: str, sid: str, record: dict[str, Any] | None) -> None:
        """The file with ``sid``'s record replaced (None: removed; absent: appended)."""
        e = self.adapter.files[entity]
        path, fmt = e.store.path, e.store.fmt
        tmp = path.with_name(f".{path.name}.kit-{uuid.uuid4().hex[:6]}")
        header: list[str] | None = None
        done = False
        with tmp.open("wb") as out:
            if path.exists():
                with path.open("rb") as f:
                    for frame in codec.frames(f, fmt):
                        raw = frame.raw if frame.raw.endswith(b"\n") else frame.raw + b"\n"
                        if fmt == "csv" and header is None:
                            header = codec.header(frame.raw)
                            out.write(raw)
                            continue
                        if str(codec.decode(fmt, header, frame.raw).get(e.mapping.id)) == sid:
                            done = True
                            if record is not None:
                                out.write(codec.encode(fmt, header, record))
                            continue
                        out.write(raw)
            if fmt == "csv" and header is None:
                header = e.store.columns()
                out.write(codec.encode_header(header))
            if not done and record is not None:
                out.write(codec.encode(fmt, header, record))
        os.replace(tmp, path)

    def _record(self, entity: str, sid: str) -> dict[str, Any]:
        e = self.adapter.files[entity]
        with e.store.path.open("rb") as f:
            header = None
            for frame in codec.frames(f, e.store.fmt):
                if e.store.fmt == "csv" and header is None:
                    header = codec.header(frame.raw)
                    continue
                record = codec.decode(e.store.fmt, header, frame.raw)
                if str(record.get(e.mapping.id)) == sid:
                    return record
        raise KitSetupError(f"entities.{entity}: record {sid} is not in the file")

    def insert(self, entity: str, fields: dict[str, Scalar]) -> str:
        e = self.adapter.files[entity]
        sid = f"user-{uuid.uuid4().hex[:12]}"
        record: dict[str, Any] = {e.mapping.id: sid, **e.mapper.write(dict(fields))}
        if e.mapping.deleted is not None:
            record[e.mapping.deleted] = not e.mapping.deleted_value
        self._replace(entity, sid, record)
        return sid

    def update(self, entity: str, source_record_id: str, fields: dict[str, Scalar]) -> None:
        e = self.adapter.files[entity]
        record = {**self._record(entity, source_record_id), **e.mapper.write(dict(fields))}
        self._replace(entity, source_record_id, record)

    def delete(self, entity: str, source_record_id: str) -> None:
        e = self.adapter.files[entity]
        if e.mapping.deleted is None:
            self._replace(entity, source_record_id, None)
            return
        record = self._record(entity, source_record_id)
        record[e.mapping.deleted] = e.mapping.deleted_value
        self._replace(entity, source_record_id, record)

    def refused(self, entity: str) -> dict[str, Scalar]:
        """Text for a field whose transform wants a typed value: a file takes any text,
        so only a transform refuses."""
        for name, t in self.adapter.files[entity].mapping.transforms.items():
            if t.type in _TYPED and t.direction != "read":
                return {name: "not a value of its type"}
        raise KitSetupError(
            f"entities.{entity}.transforms: map one field with a type (e.g. "
            'type = "integer"): a file refuses nothing else'
        )

    @contextmanager
    def outage(self) -> Iterator[None]:
        folders = {e.store.path.parent.resolve() for e in self.adapter.files.values()}
        if Path.cwd().resolve() in folders:
            raise KitSetupError("put the files in a folder of their own for the outage check")
        moved = [(folder, folder.with_name(folder.name + ".kit-away")) for folder in folders]
        for folder, away in moved:
            folder.rename(away)
        try:
            yield
        finally:
            for folder, away in moved:
                away.rename(folder)

    def close(self) -> None:
        pass
