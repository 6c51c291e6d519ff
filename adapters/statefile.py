"""The adapter's own small state file: its actor (epoch) and capture cursors.

Kept apart from the CRM database on purpose: losing it means the adapter comes back
as a new actor epoch, which is always safe; restoring an old copy is refused by the
registry.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import msgpack
import sqlalchemy as sa

from router.database import make_engine

_meta = sa.MetaData()
_kv = sa.Table(
    "crmsync_adapter_state",
    _meta,
    sa.Column("key", sa.String(128), primary_key=True),
    sa.Column("value", sa.LargeBinary, nullable=False),
)


def _encode(value: Any) -> bytes:
    if isinstance(value, datetime):
        value = {"datetime": value.isoformat()}
    packed: bytes = msgpack.packb(value, use_bin_type=True)
    return packed


def _decode(raw: bytes) -> Any:
    value = msgpack.unpackb(raw, raw=False)
    if isinstance(value, dict) and set(value) == {"datetime"}:
        return datetime.fromisoformat(value["datetime"])
    return value


class StateFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._engine = make_engine(f"sqlite:///{path}")
        _meta.create_all(self._engine)

    def get(self, key: str, default: Any = None) -> Any:
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(_kv.c.value).where(_kv.c.key == key)).first()
        return _decode(row.value) if row else default

    def set(self, key: str, value: Any) -> None:
        with self._engine.begin() as conn:
            raw = _encode(value)
            if conn.execute(_kv.update().where(_kv.c.key == key).values(value=raw)).rowcount == 0:
                conn.execute(_kv.insert().values(key=key, value=raw))

    def close(self) -> None:
        self._engine.dispose()
