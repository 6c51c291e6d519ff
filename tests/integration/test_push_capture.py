"""Push capture on PostgreSQL (``capture.push``, issue 12 item 5): triggers NOTIFY the
adapter, whose capture then runs at once instead of at the next poll.

Each test has its own PostgreSQL schema (``private_database``) and its own adapter name,
so its channel (derived from the name) is its own too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import tomllib
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from aio_pika.abc import AbstractRobustConnection

from adapters import push_trigger
from adapters.push import PushListener, Wakeup, connect_args
from adapters.runtime import AdapterRuntime
from adapters.sql import SqlAdapter
from router import topology
from router.adapter_config import AdapterConfig
from router.broker.aio import Connection
from router.errors import ConfigError
from router.status import gather_status
from tests.integration.support import RunningRouter, eventually, logged
from tests.integration.test_sql_servers import _admin_engine, private_database

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]

LAYOUT = [
    "CREATE TABLE people (id serial PRIMARY KEY, first_name text, updated_at timestamp)",
    "CREATE TABLE mails (id serial PRIMARY KEY, address text, updated_at timestamp)",
    """CREATE TABLE people_mails (id serial PRIMARY KEY, person_id integer,
        mail_id integer, updated_at timestamp)""",
]


def _config(url: str, tmp_path: Path, *, push: bool = True, related: bool = True) -> AdapterConfig:
    contact: dict[str, Any] = {"table": "people", "fields": {"first_name": "first_name"}}
    if related:
        link = {"table": "people_mails", "record": "person_id", "other": "mail_id"}
        contact["related"] = {
            "email": {
                "table": "mails",
                "column": "address",
                "updated_at": "updated_at",
                "link": {**link, "updated_at": "updated_at"},
            }
        }
    return AdapterConfig.model_validate(
        {
            "name": f"push{uuid.uuid4().hex[:8]}",
            "database": {"url": url},
            "state": {"path": str(tmp_path / "adapter.state.db")},
            # Far longer than any assertion waits: only a push can be that quick.
            "capture": {"push": push, "poll_interval": 30.0},
            "heartbeat_interval": 0.2,  # what status says of push, soon
            "entities": {"contact": contact},
        }
    )


@pytest.fixture
def pg() -> Iterator[str]:
    with private_database("postgresql") as url:
        engine = sa.create_engine(url)
        with engine.begin() as conn:
            for statement in LAYOUT:
                conn.exec_driver_sql(statement)
        engine.dispose()
        yield url


@contextlib.contextmanager
def _engine(url: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(url)
    try:
        yield engine
    finally:
        engine.dispose()


def _installed(engine: sa.Engine, adapter: str) -> set[str]:
    with engine.begin() as conn:
        return push_trigger.installed_on(conn, adapter)


def _run(engine: sa.Engine, statement: str) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql(statement)


def test_triggers_cover_related_tables_idempotently_and_go_when_push_is_off(
    pg: str, tmp_path: Path
) -> None:
    config = _config(pg, tmp_path)
    with _engine(pg) as engine:
        for _ in range(2):  # the second start finds them installed
            SqlAdapter(config).close()
            assert _installed(engine, config.name) == {"people", "mails", "people_mails"}
        with engine.begin() as conn:
            count = conn.execute(
                sa.text("SELECT count(*) FROM pg_trigger WHERE tgname = :n"),
                {"n": push_trigger.trigger_name(config.name)},
            ).scalar_one()
        assert count == 3

        # The related field unmapped: its tables' triggers would wake for nothing.
        fewer = _config(pg, tmp_path, related=False).model_copy(update={"name": config.name})
        SqlAdapter(fewer).close()
        assert _installed(engine, config.name) == {"people"}

        off = _config(pg, tmp_path, push=False).model_copy(update={"name": config.name})
        SqlAdapter(off).close()
        assert _installed(engine, config.name) == set()
        # No trigger is left calling the dropped function: the CRM still writes.
        _run(engine, "INSERT INTO people (first_name, updated_at) VALUES ('Ada', now())")


def test_a_shared_table_gets_one_trigger(pg: str, tmp_path: Path) -> None:
    """Odoo's contacts and companies both live in res_partner."""
    from tests.integration import crm_layouts as crm

    with _engine(pg) as engine:
        crm.create(engine, crm.ODOO_DDL)
        raw = tomllib.loads((ROOT / "config/adapters/odoo.toml").read_text())
        raw["database"]["url"] = pg
        raw["state"]["path"] = str(tmp_path / "odoo.state.db")
        raw["capture"]["push"] = True
        raw["name"] = f"odoo{uuid.uuid4().hex[:8]}"
        SqlAdapter(AdapterConfig.model_validate(raw)).close()
        assert _installed(engine, raw["name"]) == {"res_partner"}


def test_every_changing_statement_notifies_the_table_name_only(pg: str, tmp_path: Path) -> None:
    config = _config(pg, tmp_path)
    SqlAdapter(config).close()
    with _engine(pg) as engine, psycopg.connect(**connect_args(pg), autocommit=True) as listen:
        listen.execute(f"LISTEN {push_trigger.channel(config.name)}")
        _run(engine, "INSERT INTO mails (address, updated_at) VALUES ('secret@x.example', now())")
        with engine.begin() as conn:  # one transaction, many rows: one notification
            conn.exec_driver_sql(
                "INSERT INTO people (first_name, updated_at) "
                "SELECT 'Secret' || g, now() FROM generate_series(1, 50) g"
            )
            conn.exec_driver_sql("UPDATE people SET first_name = 'Hidden'")
        _run(engine, "DELETE FROM people_mails")
        got = [n.payload for n in listen.notifies(timeout=0.5, stop_after=4)]
    assert got == ["mails", "people", "people_mails"]


async def test_listener_wakes_again_after_its_backend_is_terminated(
    pg: str, tmp_path: Path
) -> None:
    config = _config(pg, tmp_path)
    SqlAdapter(config).close()
    wakeup = Wakeup()
    listener = PushListener(
        pg, push_trigger.channel(config.name), wakeup, config.name, backoff=(0.05, 1.0)
    )
    # Its own logger (the name is the test's): INFO says when push is active.
    logging.getLogger(f"crmsync.adapter.{config.name}").setLevel(logging.INFO)
    task = asyncio.create_task(listener.run())
    admin = _admin_engine("postgresql")
    try:
        with _engine(pg) as engine, logged(f"crmsync.adapter.{config.name}") as records:
            await asyncio.wait_for(listener.listening(), 10)
            assert await wakeup.wait(5)  # the first connect wakes once
            assert not await wakeup.wait(0.2)  # ... and only once

            pid = listener.backend_pid
            assert pid is not None
            with admin.connect() as conn:
                killed = conn.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid})
                assert killed.scalar_one() is True
            # Reconnected: a wake for whatever changed while nobody listened.
            assert await wakeup.wait(10)
            assert listener.active and listener.connects == 2
            assert listener.backend_pid not in (None, pid)

            insert = "INSERT INTO people (first_name, updated_at) VALUES ('Bo', now())"
            await asyncio.to_thread(_run, engine, insert)
            assert await wakeup.wait(5)
            assert listener.notifications == 1
            said = [r.getMessage() for r in records]
            assert said == [
                "push capture active",
                "push capture fell back to polling (every poll_interval) until its "
                "connection is back",
                "push capture active again",
            ]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        admin.dispose()
    assert not listener.active


async def test_the_liveness_check_between_waits_loses_no_wake(pg: str, tmp_path: Path) -> None:
    config = _config(pg, tmp_path, related=False)
    SqlAdapter(config).close()
    wakeup = Wakeup()
    # The listener leaves notifies() and runs SELECT 1 every 20 ms.
    listener = PushListener(
        pg, push_trigger.channel(config.name), wakeup, config.name, check_every=0.02
    )
    task = asyncio.create_task(listener.run())
    try:
        with _engine(pg) as engine:
            await asyncio.wait_for(listener.listening(), 10)
            assert await wakeup.wait(5)
            for name in ("Ann", "Ben", "Cat", "Dan", "Eve"):
                insert = f"INSERT INTO people (first_name, updated_at) VALUES ('{name}', now())"
                await asyncio.to_thread(_run, engine, insert)
                assert await wakeup.wait(5), f"the insert of {name} woke nothing"
            assert listener.connects == 1 and listener.notifications == 5
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.mark.parametrize("backend", ["sqlite", "mariadb"])
def test_push_is_refused_where_there_is_no_listen_notify(backend: str, tmp_path: Path) -> None:
    with private_database(backend, tmp_path) as url, _engine(url) as engine:
        _run(
            engine,
            "CREATE TABLE people (id integer PRIMARY KEY, first_name text, updated_at timestamp)",
        )
        config = _config(url, tmp_path, related=False)
        with pytest.raises(ConfigError, match=r"capture\.push needs PostgreSQL"):
            SqlAdapter(config)


def test_a_user_that_may_not_create_triggers_gets_the_grant_to_ask_for(
    pg: str, tmp_path: Path
) -> None:
    role = f"crmsync_r_{uuid.uuid4().hex[:12]}"
    admin = _admin_engine("postgresql")
    url = sa.engine.make_url(pg)
    schema = url.query["options"].split("=", 1)[1]
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE ROLE "{role}" LOGIN')
            # Enough for the links and the function, not for a trigger on the CRM's tables.
            conn.exec_driver_sql(f'GRANT USAGE, CREATE ON SCHEMA "{schema}" TO "{role}"')
            conn.exec_driver_sql(
                f'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA "{schema}" '
                f'TO "{role}"'
            )
        as_role = url.set(username=role).render_as_string(hide_password=False)
        config = _config(as_role, tmp_path, related=False)
        config = config.model_copy(
            update={"capture": config.capture.model_copy(update={"delete_journal": False})}
        )
        with pytest.raises(ConfigError, match=r"capture\.push.*TRIGGER privilege"):
            SqlAdapter(config)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP OWNED BY "{role}"')
            conn.exec_driver_sql(f'DROP ROLE "{role}"')
        admin.dispose()


async def _push_status(connection: AbstractRobustConnection, name: str) -> str | None:
    """What ``crmsync status`` (its --json) says of the adapter's push capture."""
    data = await gather_status(Connection(connection), timeout=5.0)
    [adapter] = [a for a in data["adapters"] if a["name"] == name]
    push: str | None = (adapter["capture"] or {}).get("push")
    return push


@contextlib.asynccontextmanager
async def _running(
    config: AdapterConfig, listen_port: int | None = None
) -> AsyncIterator[AdapterRuntime]:
    runtime = AdapterRuntime(config, SqlAdapter(config))
    if listen_port is not None:
        assert runtime.push is not None
        runtime.push._params["port"] = listen_port
    task = asyncio.create_task(runtime.run())
    ready = asyncio.create_task(runtime.ready.wait())
    await asyncio.wait({task, ready}, timeout=15, return_when=asyncio.FIRST_COMPLETED)
    if not ready.done():
        ready.cancel()
        task.result() if task.done() else task.cancel()
        raise AssertionError("adapter did not become ready")
    try:
        yield runtime
    finally:
        runtime.stop()
        await asyncio.wait_for(task, 15)


async def test_a_change_is_published_long_before_the_next_poll(
    pg: str, tmp_path: Path, router: RunningRouter, connection: AbstractRobustConnection
) -> None:
    config = _config(pg, tmp_path)
    channel = await connection.channel()
    queue = await channel.declare_queue(exclusive=True)
    await queue.bind(topology.CHANGES, f"{config.name}.#")
    with _engine(pg) as engine:
        async with _running(config) as runtime:
            assert runtime.push is not None
            await asyncio.wait_for(runtime.push.listening(), 10)
            # The first pass and the connect's wake have run: capture now waits 30 s.
            while runtime.wakeup.is_set() or runtime.wakeup.wakes == 0:
                await asyncio.sleep(0.01)
            async with queue.iterator() as messages:
                for first_name in ("Ada", "Bo"):
                    insert = (
                        f"INSERT INTO people (first_name, updated_at) "
                        f"VALUES ('{first_name}', now())"
                    )
                    started = time.monotonic()
                    await asyncio.to_thread(_run, engine, insert)
                    message = await asyncio.wait_for(anext(messages), 5)
                    await message.ack()
                    took = time.monotonic() - started
                    assert took < 2.0, f"published {took:.2f}s after the commit"
                    assert message.routing_key == f"{config.name}.contact.upsert"

            async def push_active() -> bool:
                return await _push_status(connection, config.name) == "active"

            await eventually(push_active, what="status: push active")


async def test_without_its_listener_capture_still_polls(
    pg: str, tmp_path: Path, router: RunningRouter, connection: AbstractRobustConnection
) -> None:
    """A lost notification costs latency, never a change."""
    config = _config(pg, tmp_path)
    config = config.model_copy(
        update={"capture": config.capture.model_copy(update={"poll_interval": 0.3})}
    )
    channel = await connection.channel()
    queue = await channel.declare_queue(exclusive=True)
    await queue.bind(topology.CHANGES, f"{config.name}.#")
    with _engine(pg) as engine, logged(f"crmsync.adapter.{config.name}") as records:
        # Nothing listens on port 1: the LISTEN never starts, the CRM's port is fine.
        async with _running(config, listen_port=1) as runtime:
            assert runtime.push is not None
            await eventually(
                lambda: any("fell back to polling" in r.getMessage() for r in records),
                what="the fall-back warning",
            )
            assert not runtime.push.active
            insert = "INSERT INTO people (first_name, updated_at) VALUES ('Cy', now())"
            await asyncio.to_thread(_run, engine, insert)
            async with queue.iterator() as messages:
                message = await asyncio.wait_for(anext(messages), 5)
                await message.ack()
            assert message.routing_key == f"{config.name}.contact.upsert"
            assert runtime.wakeup.wakes == 0
            assert await _push_status(connection, config.name) == "polling"
