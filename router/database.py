"""SQL plumbing every crmsync store shares: engines with safe defaults, and column
types that keep their meaning on SQLite, PostgreSQL and MariaDB alike.

MariaDB turns ``Float`` into a 4-byte FLOAT (epoch timestamps off by minutes) and
``LargeBinary`` into a 64 KB BLOB; :data:`Timestamp` and :data:`Blob` say what crmsync
means everywhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Engine

from router.errors import ConfigError

Timestamp = sa.Double
Blob = sa.LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL and full fsync, and its folder is created."""
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError as e:
        raise ConfigError(f"state.url is not a database URL: {url!r}") from e
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"check_same_thread": False})
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return sa.create_engine(url, pool_pre_ping=True)
