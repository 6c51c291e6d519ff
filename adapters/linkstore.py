"""Where an adapter keeps its links, clocks and outbox: one SQLAlchemy database.

For ``kind = "sql"`` that is the CRM's own database, so a write and its bookkeeping
commit in one transaction. An adapter whose CRM is not a database it can join (an HTTP
API, a file) keeps them in ``[database] url`` or, by default, a SQLite file beside its
state file (:attr:`AdapterConfig.links_url`): subclass :class:`LinkStoreAdapter` and the
transactions the SDK hands to every method are on that database.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from adapters import links
from adapters.base import Adapter
from router.database import make_engine
from router.errors import ConfigError, TransientWriteError, WriteError


def _lenient_text(dbapi_connection: Any, _record: Any) -> None:
    # SQLite does not check that TEXT is UTF-8; the driver's default decoding raises while
    # fetching, which failed the whole page on every poll. Undecodable bytes come through
    # as surrogates instead, and capture skips that one row when it cannot encode it.
    dbapi_connection.text_factory = lambda raw: raw.decode("utf-8", "surrogateescape")


def db_error(cls: type[WriteError], err: sa.exc.DBAPIError) -> WriteError:
    """A database error as a write error: its full text for the DLQ header, and for
    logs only the error's class and the constraint it names (its text may quote values)."""
    orig = err.orig
    name = type(orig).__name__
    constraint = getattr(getattr(orig, "diag", None), "constraint_name", None)
    log_text = f"{name} ({constraint})" if constraint else name
    return cls(f"{name}: {orig}", log_text=log_text)


def _transient(err: sa.exc.DBAPIError) -> Exception:
    return db_error(TransientWriteError, err)


class LinkStoreAdapter(Adapter):
    """An adapter whose SDK transactions run on one database (``url``)."""

    # How a database error inside a transaction reaches the SDK (retry vs dead-letter).
    classify: Callable[[sa.exc.DBAPIError], Exception] = staticmethod(_transient)

    def __init__(self, url: str, where: str = "adapter config") -> None:
        self.engine = make_engine(url)
        if self.engine.dialect.name == "sqlite":
            sa.event.listen(self.engine, "connect", _lenient_text)
        self._where = where

    def create_links(self) -> None:
        """Create the SDK's tables where they are missing (idempotent)."""
        try:
            with self.engine.begin() as conn:
                links.create(conn)
        except sa.exc.OperationalError as e:
            raise ConfigError(f"{self._where}: cannot open the links database: {e.orig}") from e

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        try:
            with self.engine.begin() as conn:
                yield conn
        except sa.exc.DBAPIError as e:
            raise self.classify(e) from e

    @contextmanager
    def snapshot(self) -> Iterator[Connection]:
        try:
            with self.engine.connect() as conn:
                if conn.dialect.name == "sqlite":
                    # pysqlite begins only before a write: its reads would each see the
                    # latest commit. IMMEDIATE takes the write lock now, so the page's
                    # link writes cannot fail on a snapshot a user's commit made stale.
                    with conn.begin():
                        conn.exec_driver_sql("BEGIN IMMEDIATE")
                        yield conn
                    return
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
                with conn.begin():
                    yield conn
        except sa.exc.DBAPIError as e:
            raise self.classify(e) from e

    def close(self) -> None:
        self.engine.dispose()
