"""Users editing the three demo CRMs under a running crmsync, and what the checker reads.

:class:`Users` makes steady inserts, updates and deletes from one thread (so the global
order of writes is the order they committed) and records each one as a
:class:`~tests.faults.checker.Write`. Every update or delete is *causal*: it is made in a
CRM only when that CRM already shows the record's latest values, as a person looking at
the record would; otherwise the user picks the CRM that made the last write. A write the
CRM refused (its database locked by an outage) is not recorded: the user saw an error.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika
import sqlalchemy as sa

from router import topology
from router.broker.aio import connect
from router.config import BrokerConfig
from router.demo.crms import DemoDb
from router.status import run_status
from tests.faults.checker import Row, Write, fold
from tests.integration.spine import Spine

EDITED = ("first_name", "last_name")  # what users change; every CRM maps both


class FaultSpine(Spine):
    """The spine with its daemons pointed at ``daemon_url`` (the node itself, or a proxy
    in front of it) while status and the checker talk to ``node_url`` directly."""

    def __init__(self, workdir: Path, node_url: str, daemon_url: str | None = None) -> None:
        super().__init__(workdir, daemon_url or node_url)
        self.node_url = node_url
        self.restarts: dict[str, int] = {}

    def status(self) -> dict[str, Any]:
        return run_status(lambda: connect(BrokerConfig(url=self.node_url), "crmsync-fault"), 5.0)

    def pids(self) -> dict[str, int]:
        return {name: proc.pid for name, proc in self.fleet.procs.items()}

    def restart(self, name: str) -> None:
        """What a supervisor does after a crash: start it again, and count it."""
        self.restarts[name] = self.restarts.get(name, 0) + 1
        if name == "router":
            self.start_router()
        else:
            self.start_adapter(name)


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class Users:
    def __init__(self, dbs: Mapping[str, DemoDb], seed: int = 10) -> None:
        self.dbs = dict(dbs)
        self.rng = random.Random(seed)
        self.writes: list[Write] = []
        self.refused = 0
        self._n = 0
        self._last_writer: dict[str, str] = {}
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.paused: set[str] = set()  # CRMs users stay away from (a scenario's victim)

    # -- what one user does ------------------------------------------------------------
    def _next(self) -> int:
        self._n += 1
        return self._n

    def insert(self, crm: str) -> Write:
        db = self.dbs[crm]
        n = self._next()
        key = f"f{n}@example.com"
        values = {"first_name": f"F{n}", "last_name": f"L{n}", "phone": f"+1-555-{n:07d}"}
        row: dict[str, Any] = {db.crm.fields[k]: v for k, v in values.items() if k in db.crm.fields}
        row[db.crm.fields["email"]] = key
        row[db.crm.updated_at] = _now()
        if not db.crm.int_ids:
            row[db.crm.id] = f"W-{n:07d}"
        if db.crm.deleted:
            row[db.crm.deleted] = False
        with db.engine.begin() as conn:
            conn.execute(db.table.insert().values(row))
        return self._record(crm, key, "insert", values)

    def _current(self, crm: str, key: str) -> dict[str, Any] | None:
        db = self.dbs[crm]
        f = db.crm.fields
        query = sa.select(*(db.c[f[k]] for k in EDITED)).where(db.c[f["email"]] == key)
        if db.crm.deleted:
            query = query.where(db.c[db.crm.deleted].is_(False))
        with db.engine.connect() as conn:
            got = conn.execute(query).first()
        return None if got is None else dict(zip(EDITED, got, strict=True))

    def _up_to_date(self, crm: str, key: str, want: Mapping[str, str]) -> bool:
        seen = self._current(crm, key)
        return seen is not None and all(seen[k] == want[k] for k in EDITED)

    def edit(self, key: str, delete: bool = False) -> Write | None:
        want = fold(w for w in self.writes if w.key == key)[key]
        if not want.alive:
            return None
        choices = [c for c in self.dbs if c not in self.paused]
        self.rng.shuffle(choices)
        choices.append(self._last_writer[key])  # it wrote last, so it shows the latest
        crm = next(
            (c for c in choices if c not in self.paused and self._up_to_date(c, key, want.fields)),
            None,
        )
        if crm is None:
            return None
        db = self.dbs[crm]
        where = db.c[db.crm.fields["email"]] == key
        with db.engine.begin() as conn:
            if delete and db.crm.deleted:
                values = {db.crm.deleted: True, db.crm.updated_at: _now()}
                conn.execute(db.table.update().where(where).values(values))
            elif delete:
                conn.execute(db.table.delete().where(where))
            else:
                n = self._next()
                changed = {k: f"{k[0].upper()}{n}" for k in self.rng.sample(EDITED, k=1)}
                values = {db.crm.fields[k]: v for k, v in changed.items()}
                values[db.crm.updated_at] = _now()
                conn.execute(db.table.update().where(where).values(values))
        return self._record(crm, key, "delete" if delete else "update", {} if delete else changed)

    def _record(self, crm: str, key: str, op: Any, fields: Mapping[str, str]) -> Write:
        with self._lock:
            write = Write(len(self.writes) + 1, crm, key, op, dict(fields))
            self.writes.append(write)
            self._last_writer[key] = crm
        return write

    def step(self) -> None:
        live = [k for k, e in fold(self.writes).items() if e.alive]
        roll = self.rng.random()
        try:
            if not live or roll < 0.35:
                crm = self.rng.choice([c for c in self.dbs if c not in self.paused])
                self.insert(crm)
            else:
                self.edit(self.rng.choice(live), delete=roll > 0.95)
        except sa.exc.OperationalError:
            self.refused += 1  # the CRM's database was unavailable; the user saw an error

    # -- steady load -------------------------------------------------------------------
    def start(self, rate: float = 10.0) -> None:
        def loop() -> None:
            while not self._stop.is_set():
                self.step()
                self._stop.wait(1.0 / rate)

        self._thread = threading.Thread(target=loop, name="users", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)

    def probe(self, crm: str = "legacy") -> str:
        """One insert, for timing how soon the system syncs again; returns its key."""
        with self._lock:
            return self.insert(crm).key


def snapshot(dbs: Mapping[str, DemoDb]) -> dict[str, list[Row]]:
    """Every CRM's live rows, duplicates kept (the checker counts them)."""
    out: dict[str, list[Row]] = {}
    for name, db in dbs.items():
        query = sa.select(db.table)
        if db.crm.deleted:
            query = query.where(db.c[db.crm.deleted].is_(False))
        with db.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        f = db.crm.fields
        out[name] = [Row(str(r[f["email"]]), {k: r[f[k]] for k in EDITED}) for r in rows]
    return out


def visible_everywhere(dbs: Mapping[str, DemoDb], key: str) -> bool:
    for db in dbs.values():
        with db.engine.connect() as conn:
            col = db.c[db.crm.fields["email"]]
            if conn.execute(sa.select(sa.func.count()).where(col == key)).scalar() == 0:
                return False
    return True


def drain_dead_letters(url: str, adapters: list[str]) -> list[tuple[str, dict[str, Any]]]:
    """Take every entry from the invalid queue and the adapters' DLQs: (queue, headers)."""

    async def go() -> list[tuple[str, dict[str, Any]]]:
        conn = await aio_pika.connect(url, timeout=10)
        got: list[tuple[str, dict[str, Any]]] = []
        try:
            for queue_name in [topology.INVALID, *map(topology.dlq_queue, adapters)]:
                channel = await conn.channel()
                try:
                    queue = await channel.declare_queue(queue_name, passive=True)
                except aio_pika.exceptions.ChannelClosed:
                    continue  # never declared: nothing dead-lettered there
                while (message := await queue.get(no_ack=True, fail=False)) is not None:
                    got.append((queue_name, dict(message.headers or {})))
                await channel.close()
        finally:
            await conn.close()
        return got

    return asyncio.run(go())


def publish(url: str, body: bytes, routing_key: str, exchange: str = topology.CHANGES) -> None:
    """A raw publish to the node, as a hostile or broken client would make it."""

    async def go() -> None:
        conn = await aio_pika.connect(url, timeout=10)
        try:
            channel = await conn.channel()
            target = (
                channel.default_exchange
                if exchange == ""
                else await channel.get_exchange(exchange, ensure=False)
            )
            await target.publish(
                aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key,
            )
        finally:
            await conn.close()

    asyncio.run(go())


def wait_for(what: str, predicate: Any, timeout: float, spine: FaultSpine | None = None) -> float:
    """Seconds until ``predicate()`` held; AssertionError after ``timeout``."""
    began = time.monotonic()
    while not predicate():
        if spine is not None:
            spine.fleet.check()
        if time.monotonic() - began > timeout:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.2)
    return time.monotonic() - began
