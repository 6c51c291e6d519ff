"""The CRM database's own clock, as SQL expressions shaped like its ``updated_at`` column.

Capture bounds its cursor by the database's clock, and delivery writes let the database
stamp ``updated_at``: the adapter host's clock is never compared with the CRM's writers'
(an adapter host running ahead once made every later edit invisible). Expressions are
in UTC and of the column's kind: aware for ``timestamptz``, naive UTC for a plain
timestamp / ``DATETIME``, seconds since the epoch for a numeric column. MariaDB/MySQL
``TIMESTAMP`` columns are converted through the session time zone on read and write, so
they get the session's ``NOW()``, which goes through the same conversion.

Text columns hold timestamps in whatever shape the CRM wrote: crmsync stamps them as
ISO-8601 UTC text from the database's clock, and capture keeps no cursor for them
(every poll reads the whole table; see :func:`adapters.cursor.advance`).
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql


class Kind(enum.Enum):
    AWARE = "aware"  # timestamp with time zone
    NAIVE = "naive"  # timestamp without time zone, DATETIME: UTC by convention
    SESSION = "session"  # MariaDB/MySQL TIMESTAMP: the session's time zone, naive
    EPOCH = "epoch"  # seconds since 1970 (int or float column)
    TEXT = "text"  # anything else: no arithmetic


def kind_of(column: sa.Column[Any]) -> Kind:
    if isinstance(column.type, mysql.TIMESTAMP):
        return Kind.SESSION
    try:
        python_type = column.type.python_type
    except NotImplementedError:
        return Kind.TEXT
    if python_type is datetime:
        return Kind.AWARE if getattr(column.type, "timezone", False) else Kind.NAIVE
    if python_type in (int, float):
        return Kind.EPOCH
    return Kind.TEXT


# SQLAlchemy stores SQLite DateTime as 'YYYY-MM-DD HH:MM:SS.ffffff' text; %f gives
# milliseconds, so three zeros keep the stamps as long as (and ordered with) the others.
_SQLITE_NOW = "strftime('%Y-%m-%d %H:%M:%f', 'now') || '000'"
_SQLITE_EPOCH = "((julianday('now') - 2440587.5) * 86400.0)"


def now_expr(dialect: str, kind: Kind, integer: bool = False) -> sa.ColumnElement[Any]:
    """The database's current time as a value for an ``updated_at`` of ``kind``."""
    if dialect == "sqlite":
        if kind is Kind.EPOCH:
            text = f"CAST({_SQLITE_EPOCH} AS INTEGER)" if integer else _SQLITE_EPOCH
            return sa.literal_column(text)
        return sa.literal_column(_SQLITE_NOW)
    if dialect == "postgresql":
        # now() is the transaction's start: the horizon's bound by the oldest open
        # transaction (xact_start) is what keeps such stamps from being skipped.
        expr = {
            Kind.AWARE: "now()",
            Kind.NAIVE: "timezone('UTC', now())",
            Kind.SESSION: "timezone('UTC', now())",
            Kind.EPOCH: "extract(epoch from now())",
            Kind.TEXT: "CAST(timezone('UTC', now()) AS TEXT)",
        }[kind]
        if kind is Kind.EPOCH and integer:
            expr = f"CAST(floor({expr}) AS BIGINT)"
        return sa.literal_column(expr)
    if dialect in ("mysql", "mariadb"):
        expr = {
            Kind.AWARE: "UTC_TIMESTAMP(6)",
            Kind.NAIVE: "UTC_TIMESTAMP(6)",
            Kind.SESSION: "NOW(6)",
            Kind.EPOCH: "UNIX_TIMESTAMP(NOW(6))",
            Kind.TEXT: "CAST(UTC_TIMESTAMP(6) AS CHAR)",
        }[kind]
        if kind is Kind.EPOCH and integer:
            expr = "UNIX_TIMESTAMP()"
        return sa.literal_column(expr)
    # Another database SQLAlchemy reaches: its CURRENT_TIMESTAMP, whatever zone it uses.
    return sa.func.current_timestamp()


def oldest_open_transaction(dialect: str) -> sa.TextClause | None:
    """Where the database can say: when the oldest transaction still open in this
    database (other than ours) began, as ``timestamptz``. Its rows may carry stamps from
    its start (PostgreSQL's now()), so the cursor must not pass it. Needs the role to see
    other roles' sessions (``pg_read_all_stats``); rows it cannot see read as NULL."""
    if dialect != "postgresql":
        return None
    return sa.text(
        "SELECT min(xact_start) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid() "
        "AND xact_start IS NOT NULL"
    )


def as_position(value: Any, kind: Kind) -> Any:
    """A clock value read from the database, in the Python type capture positions have."""
    if value is None:
        return None
    if kind is Kind.EPOCH:
        return float(value)
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        return None
    if kind is Kind.AWARE:
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value


def bound_for(value: datetime, kind: Kind) -> Any:
    """An aware instant (``xact_start``) in the shape of a ``kind`` position."""
    if kind is Kind.EPOCH:
        return value.timestamp()
    if kind is Kind.AWARE:
        return value
    if kind is Kind.NAIVE:
        return value.astimezone(UTC).replace(tzinfo=None)
    return None  # SESSION / TEXT never come from PostgreSQL's xact_start
