"""One active router per state store: the others are hot standbys.

Two routers consuming one ingress each decide with their own in-memory registry, and
they diverge (one refuses the events of an adapter that registered with the other).
So only the router holding the state store's leadership lock loads the registry and
consumes the ingress and control queues; single-active-consumer on the ingress is the
broker-side guarantee on top.

* PostgreSQL: a session advisory lock, MariaDB/MySQL: a named lock (``GET_LOCK``), each
  held on a connection of its own for the life of the process. The server drops it the
  moment that session ends (process killed, host gone), so a standby polling for it takes
  over within a poll or two.
* SQLite: an exclusive ``flock`` on ``<state file>.lock``. A SQLite store lives on one
  host and a standby there buys nothing, so a second router refuses to start instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import socket
import time
from pathlib import Path
from typing import IO, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from router.database import make_engine
from router.errors import StateError
from router.logs import kv
from router.notify import notify
from router.schema import meta

log = logging.getLogger("crmsync.router")

ACTIVE_KEY = "active_router"  # crmsync_meta: which router holds the lock, since when
# The advisory lock's first key: "crms" in ASCII, so it is easy to spot in pg_locks.
PG_LOCK_CLASS = 0x63726D73
STANDBY_POLL = 0.5  # seconds between a standby's tries: the takeover's main delay
WATCH_EVERY = 2.0  # seconds between the active router's checks that the lock is still its


class RouterAlreadyRunning(StateError):
    """Another router holds this SQLite state file."""


class LeadershipLost(StateError):
    """The session holding the lock ended: another router may be active by now."""


def instance_name() -> str:
    """How operators tell routers apart in logs and ``crmsync status``."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Lock(Protocol):
    def acquire(self) -> bool:
        """Take the lock if it is free; never waits."""

    def held(self) -> bool:
        """Whether it is still ours (a server lock dies with its session)."""

    def release(self) -> None: ...

    def holder(self) -> str:
        """Who holds it, as far as the store says ('' when unknown)."""


class NoLock:
    """An in-memory SQLite store: nothing else can share it."""

    def acquire(self) -> bool:
        return True

    def held(self) -> bool:
        return True

    def release(self) -> None:
        return None

    def holder(self) -> str:
        return ""


class FileLock:
    def __init__(self, state_file: Path) -> None:
        self.path = state_file.with_name(state_file.name + ".lock")
        self._file: IO[str] | None = None

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise RouterAlreadyRunning(
                f"another router ({holder}) is using the state file {self.path.with_suffix('')}; "
                "stop it first (only one router may use a SQLite state store; run a standby "
                "on PostgreSQL instead)"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(instance_name() + "\n")
        handle.flush()
        self._file = handle
        return True

    def held(self) -> bool:
        return self._file is not None

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing drops the flock
            self._file = None

    def holder(self) -> str:
        return ""


class ServerLock:
    """A session-level lock on PostgreSQL or MariaDB, on a connection of its own."""

    def __init__(self, url: str) -> None:
        self._engine: Engine = make_engine(url)
        self._conn: Connection | None = None
        self._dialect = self._engine.dialect.name

    def _try(self, conn: Connection) -> bool:
        if self._dialect == "postgresql":
            # Keyed by schema too: stores in different schemas of one database are
            # different deployments (advisory locks are per database already).
            query = sa.text("SELECT pg_try_advisory_lock(:cls, hashtext(current_schema()))")
            return bool(conn.execute(query, {"cls": PG_LOCK_CLASS}).scalar())
        # MariaDB's locks are server-wide: the database name makes them per store.
        query = sa.text("SELECT GET_LOCK(CONCAT('crmsync-router:', DATABASE()), 0)")
        return conn.execute(query).scalar() == 1

    def acquire(self) -> bool:
        if self._conn is None:
            self._conn = self._engine.connect()
        try:
            got = self._try(self._conn)
            self._conn.commit()  # no transaction left open on the lock's session
        except sa.exc.DBAPIError:
            self._drop()
            raise
        return got

    def held(self) -> bool:
        if self._conn is None:
            return False
        try:
            self._conn.execute(sa.text("SELECT 1"))
            self._conn.commit()
            return True
        except sa.exc.DBAPIError:
            self._drop()
            return False

    def _drop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.invalidate()
                self._conn.close()
            except sa.exc.DBAPIError:
                pass
            self._conn = None

    def _unlock(self, conn: Connection) -> None:
        if self._dialect == "postgresql":
            query = sa.text("SELECT pg_advisory_unlock(:cls, hashtext(current_schema()))")
            conn.execute(query, {"cls": PG_LOCK_CLASS})
        else:
            conn.execute(sa.text("SELECT RELEASE_LOCK(CONCAT('crmsync-router:', DATABASE()))"))
        conn.commit()

    def release(self) -> None:
        # Unlock explicitly before closing: the server ends a closed session's backend a
        # moment after the socket goes, and a standby asking in that moment is refused.
        # A process that dies still frees it with its session, only that bit later.
        if self._conn is not None:
            with contextlib.suppress(sa.exc.DBAPIError):
                self._unlock(self._conn)
        self._drop()
        self._engine.dispose()

    def holder(self) -> str:
        return active(self._engine)


def lock_for(url: str) -> Lock:
    parsed = sa.engine.make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            return NoLock()
        return FileLock(Path(parsed.database))
    if backend in ("postgresql", "mysql", "mariadb"):
        return ServerLock(url)
    raise StateError(f"state.url: cannot run a router on {backend} (use SQLite or PostgreSQL)")


def announce(engine: Engine, name: str) -> None:
    """Record in the store which router is active (``crmsync status``, standbys' logs)."""
    value = f"{name} since {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}"
    with engine.begin() as conn:
        updated = conn.execute(meta.update().where(meta.c.key == ACTIVE_KEY).values(value=value))
        if updated.rowcount == 0:
            conn.execute(meta.insert().values(key=ACTIVE_KEY, value=value))


def active(engine: Engine) -> str:
    """The router that announced itself last ('' when none did)."""
    try:
        with engine.connect() as conn:
            row = conn.execute(sa.select(meta.c.value).where(meta.c.key == ACTIVE_KEY)).first()
    except sa.exc.DBAPIError:  # no tables yet: the first router has not started
        return ""
    return str(row.value) if row else ""


async def become_active(lock: Lock, stopping: asyncio.Event) -> bool:
    """Wait as a hot standby until this router holds ``lock``; False if told to stop first.

    A state server that is down is waited for, as a broker that is down would be.
    """
    announced = False
    while not stopping.is_set():
        try:
            if lock.acquire():
                return True
            if not announced:
                log.warning(
                    "standby: another router is active; taking over when it stops",
                    extra=kv(active=lock.holder() or "unknown"),
                )
                # A standby is up as far as the service manager goes: it is doing its job.
                notify("READY=1", "STATUS=standby: another router is active")
                announced = True
        except sa.exc.DBAPIError as e:
            log.warning("standby: cannot reach the state store", extra=kv(error=str(e.orig)))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), STANDBY_POLL)
    return False


async def watch(lock: Lock, on_lost: asyncio.Event) -> None:
    """Set ``on_lost`` once the lock is no longer ours (its session died)."""
    while True:
        await asyncio.sleep(WATCH_EVERY)
        if not lock.held():
            log.error("lost the state store's router lock; another router may be active now")
            on_lost.set()
            return
