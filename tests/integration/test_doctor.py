"""``crmsync doctor`` against a live system: the router running on the test's vhost and a
SQLite CRM behind an adapter config. Healthy, it passes with exit 0; a mapped column
renamed makes exactly that check fail, naming the table and the column; an unreachable
broker is one line. Also: the doctor changed nothing it looked at."""

from __future__ import annotations

import asyncio
import json
import tomllib
from pathlib import Path

import aio_pika
import pytest
import sqlalchemy as sa
from aio_pika.abc import AbstractRobustConnection

from adapters.statefile import StateFile
from router import topology
from router.adapter_config import AdapterConfig
from router.doctor import verdicts
from router.doctor.adapter_probe import adapter_checks
from router.doctor.run import run_checks
from router.doctor.state_probe import PROBE_KEY, router_state_check
from router.schema import meta
from router.state import RouterStore
from tests.integration import crm_layouts as crm
from tests.integration.cli_runner import Result, arun_cli, run_cli
from tests.integration.support import RunningRouter, depth
from tests.integration.test_sql_servers import private_database

pytestmark = pytest.mark.integration

UNREACHABLE = "amqp://guest:guest@127.0.0.1:1/"
CONFIG = Path(__file__).resolve().parents[2] / "config" / "adapters"


def _crm(tmp_path: Path) -> tuple[Path, Path]:
    """A SQLite CRM with one mapped table, an adapter config for it (router.toml beside
    it, on the fixture router's state), and the adapter's state file as a run leaves it."""
    db = tmp_path / "crm.db"
    engine = sa.create_engine(f"sqlite:///{db}")
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE contacts (id VARCHAR(36) PRIMARY KEY, email VARCHAR(255), "
            "first_name VARCHAR(80), updated_at DATETIME NOT NULL, deleted BOOLEAN)"
        )
    engine.dispose()
    StateFile(tmp_path / "crm.state.db").close()
    adapter = tmp_path / "crm.toml"
    adapter.write_text(
        'name = "crm"\nkind = "sql"\n'
        f'[database]\nurl = "sqlite:///{db}"\n'
        f'[state]\npath = "{tmp_path / "crm.state.db"}"\n'
        '[entities.contact]\ntable = "contacts"\ndeleted = "deleted"\n'
        'fields = { email = "email", first_name = "first_name" }\n'
    )
    return db, adapter


def _router_toml(tmp_path: Path, amqp: str) -> Path:
    path = tmp_path / "router.toml"
    path.write_text(f'[broker]\nurl = "{amqp}"\n[state]\nurl = "sqlite:///{tmp_path}/router.db"\n')
    return path


async def _doctor(amqp: str, tmp_path: Path, *extra: str) -> Result:
    config = _router_toml(tmp_path, amqp)
    return await arun_cli(
        "doctor", "--config", str(config), "--adapter-config", str(tmp_path / "crm.toml"),
        *extra, amqp=amqp, cwd=tmp_path,
    )  # fmt: skip


async def _in_process(
    amqp: str, tmp_path: Path, management_url: str | None = None
) -> tuple[int, list[str]]:
    """The doctor's exit code and lines without a process of its own (what the CLI
    prints, less the summary): in a thread, so this loop keeps serving the router."""
    config = _router_toml(tmp_path, amqp)
    adapters = [tmp_path / "crm.toml"]
    checks = await asyncio.to_thread(run_checks, config, adapters, management_url)
    return verdicts.exit_code(checks), [verdicts.line(c) for c in checks]


def _checks(result: Result) -> list[str]:
    """The check lines (the last line is the summary)."""
    return result.stdout.splitlines()[:-1]


async def _declared(amqp: str, tmp_path: Path) -> None:
    # What an operator does before the adapter first starts (or the adapter does).
    declared = await arun_cli(
        "topology", "declare", "--adapter-config", str(tmp_path / "crm.toml"),
        amqp=amqp, cwd=tmp_path,
    )  # fmt: skip
    assert declared.code == 0, declared


async def test_a_healthy_system_passes_every_check(
    amqp: str,
    tmp_path: Path,
    router: RunningRouter,
    vhost: str,
    connection: AbstractRobustConnection,
) -> None:
    _crm(tmp_path)
    await _declared(amqp, tmp_path)

    result = await _doctor(amqp, tmp_path)

    assert result.code == 0, result
    lines = _checks(result)
    assert all(line.startswith("ok ") for line in lines), result.stdout
    text = result.stdout
    for what in (
        "broker: ",
        f"permissions of 'guest' on vhost '{vhost}'",
        f"queue {topology.INGRESS}",
        f"queue {topology.sink_queue('crm')}",
        f"queue {topology.retry_queue('crm', '10m')}",
        "router: answering",
        f"dead letters {topology.dlq_queue('crm')}",
        "adapter crm: entities.contact (table contacts)",
        "clock of adapter crm's database",
        "clock of the broker",
        "router state store (state.url)",
        "adapter crm: state store (state.path)",
    ):
        assert what in text, what
    assert "guest:guest" not in text  # the password never shows
    assert result.stdout.splitlines()[-1].startswith("healthy: ")

    as_json = await _doctor(amqp, tmp_path, "--json")
    data = json.loads(as_json.stdout)
    assert as_json.code == 0 and data["healthy"] is True
    assert {c["status"] for c in data["checks"]} == {"ok"}

    # Without the management API: queues only checked to exist, the broker's clock not
    # compared; two warnings, still healthy.
    code, bare = await _in_process(amqp, tmp_path, "http://127.0.0.1:1")
    assert code == 0, bare
    warned = [line for line in bare if not line.startswith("ok ")]
    assert [w.split(":")[0] for w in warned] == [
        "warn topology arguments",
        "warn clock of the broker",
    ], bare
    assert f"ok   queue {topology.sink_queue('crm')}" in bare

    # A dead letter is counted, a warning: it waits for an operator, nothing is broken.
    channel = await connection.channel(publisher_confirms=True)
    dead = await channel.get_exchange(topology.DEAD, ensure=False)
    await dead.publish(aio_pika.Message(b"{}"), "crm", mandatory=True)
    code, letters = await _in_process(amqp, tmp_path)
    assert code == 0, letters
    assert [line for line in letters if not line.startswith("ok ")] == [
        f"warn dead letters {topology.dlq_queue('crm')}: 1 message(s); crmsync dlq list"
    ], letters
    assert await depth(connection, topology.dlq_queue("crm")) == 1  # looked at, left in place

    # Read-only: the state probe's row was rolled back, nothing was published.
    with router.store.engine.connect() as conn:
        probes = conn.execute(sa.select(sa.func.count()).where(meta.c.key == PROBE_KEY))
        assert probes.scalar() == 0
    assert await depth(connection, topology.INGRESS) == 0


async def test_a_renamed_mapped_column_fails_that_check_naming_table_and_column(
    amqp: str, tmp_path: Path, router: RunningRouter
) -> None:
    db, _ = _crm(tmp_path)
    await _declared(amqp, tmp_path)
    engine = sa.create_engine(f"sqlite:///{db}")
    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE contacts RENAME COLUMN email TO email_address")
    engine.dispose()

    result = await _doctor(amqp, tmp_path)

    assert result.code == 1, result
    assert "Traceback" not in result.stderr
    failed = [line for line in _checks(result) if not line.startswith("ok ")]
    assert failed == [
        "FAIL adapter crm: entities.contact (table contacts): table 'contacts' has no "
        "column(s) email (entities.contact); rename the column back, or fix "
        f"entities.contact in {tmp_path / 'crm.toml'}"
    ], result.stdout
    assert result.stdout.splitlines()[-1].startswith("unhealthy: ")


async def test_a_queue_with_other_arguments_is_named_with_the_argument(
    amqp: str, tmp_path: Path, connection: AbstractRobustConnection
) -> None:
    _crm(tmp_path)
    channel = await connection.channel()
    sink = topology.sink_queue("crm")
    await channel.declare_queue(
        sink, durable=True, arguments={"x-queue-type": "quorum", "x-delivery-limit": 5}
    )

    code, lines = await _in_process(amqp, tmp_path)

    assert code == 1, lines
    found = [line for line in lines if line.startswith(f"FAIL queue {sink}")]
    assert found == [
        f"FAIL queue {sink}: argument x-delivery-limit is 5, expected "
        f"{topology.SINK_DELIVERY_LIMIT}; {topology.mismatch_fix(sink)}"
    ], lines
    assert any(line.startswith("FAIL router: not answering") for line in lines)  # none runs


async def test_an_adapter_user_refused_by_the_broker_is_named(
    amqp: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A user per adapter: its login is checked apart from the router's."""
    _, adapter = _crm(tmp_path)
    wrong = amqp.replace("guest:guest@", "guest:not-the-password@")
    adapter.write_text(adapter.read_text() + f'[broker]\nurl = "{wrong}"\n')
    # No CRMSYNC_AMQP_URL: it would stand for every config's broker.url.
    monkeypatch.delenv("CRMSYNC_AMQP_URL")

    code, lines = await _in_process(amqp, tmp_path)

    assert code == 1, lines
    assert any(line.startswith("ok   broker: ") for line in lines)  # the router's login
    refused = [line for line in lines if "broker login" in line]
    assert len(refused) == 1, lines
    assert refused[0].startswith("FAIL adapter crm: broker login: RabbitMQ at ")
    assert "refused the login of user 'guest'" in refused[0]
    assert "not-the-password" not in "\n".join(lines)


def test_a_missing_vhost_is_named(amqp: str, tmp_path: Path) -> None:
    result = run_cli("doctor", amqp=amqp + "-gone", cwd=tmp_path)

    assert result.code == 1, result
    lines = _checks(result)
    assert len(lines) == 1, result.stdout
    assert lines[0].startswith("FAIL broker: vhost 'crmsync-test-"), lines[0]
    assert "-gone' does not exist; create it (rabbitmqctl add_vhost" in lines[0]


def test_an_unreachable_broker_is_one_line_and_exit_1(tmp_path: Path) -> None:
    result = run_cli("doctor", amqp=UNREACHABLE, cwd=tmp_path)

    assert result.code == 1, result
    assert "Traceback" not in result.stderr
    lines = _checks(result)
    assert len(lines) == 1, result.stdout
    assert lines[0].startswith(
        "FAIL broker: cannot reach RabbitMQ at amqp://guest:***@127.0.0.1:1/"
    )
    assert "guest:guest" not in result.stdout + result.stderr


# -- the shipped CRM configs and the state stores on the database servers ----------------


@pytest.mark.parametrize(
    ("name", "backend", "ddl", "table", "column"),
    [
        ("suitecrm", "mariadb", crm.SUITECRM_DDL, "email_addr_bean_rel", "bean_id"),
        ("odoo", "postgresql", crm.ODOO_DDL, "res_partner", "email"),
    ],
)
def test_a_shipped_config_passes_and_a_renamed_column_is_named(
    name: str, backend: str, ddl: list[str], table: str, column: str, tmp_path: Path
) -> None:
    """SuiteCRM's renamed column is in a link table (reached through a related field);
    Odoo's in the shared partner table."""
    where = CONFIG / f"{name}.toml"
    with private_database(backend) as url:
        engine = sa.create_engine(url)
        crm.create(engine, ddl)
        raw = tomllib.loads(where.read_text())
        raw["database"]["url"] = url
        cfg = AdapterConfig.model_validate(raw)

        healthy = adapter_checks(cfg, where)
        assert [c.status for c in healthy] == ["ok"] * len(healthy), healthy
        assert len(healthy) == len(cfg.entities) + 2  # the database, each entity, its clock

        with engine.begin() as conn:
            conn.execute(sa.text(f"ALTER TABLE {table} RENAME COLUMN {column} TO {column}_x"))
        engine.dispose()
        broken = [c for c in adapter_checks(cfg, where) if c.status != "ok"]

    assert len(broken) == 1, broken
    assert broken[0].status == "FAIL"
    assert f"table {table!r} has no column(s) {column} " in broken[0].detail


@pytest.mark.parametrize("backend", ["postgresql", "mariadb"])
def test_a_router_state_store_on_a_server_is_readable_and_writable(
    backend: str, tmp_path: Path
) -> None:
    with private_database(backend) as url:
        store = RouterStore(url)
        try:
            check = router_state_check(url)
            with store.engine.connect() as conn:
                probes = conn.execute(
                    sa.select(sa.func.count()).where(meta.c.key == PROBE_KEY)
                ).scalar()
        finally:
            store.close()
    assert check.status == "ok", check
    assert "readable and writable" in check.detail
    assert probes == 0  # the probe row was rolled back
