"""Capture-to-publish latency on PostgreSQL: push capture (``capture.push``) vs polling.

    .venv/bin/python bench/push_latency.py                        # 200 changes each, poll 1 s
    .venv/bin/python bench/push_latency.py --changes 50           # quick check
    .venv/bin/python bench/push_latency.py --poll-interval 0.5

Both contenders in the same run, one after the other, each on a fresh PostgreSQL schema
(``tests.integration.test_sql_servers.private_database``) and the same vhost, with the
real router and the real adapter as processes, started as in production (``crmsync
router --config``, ``crmsync adapter --config``):

* ``push``: ``capture.push = true``, the configured ``poll_interval`` as the catch-up;
* ``polling``: the same config with ``capture.push = false``.

The bench plays the CRM's application: it inserts N contacts one transaction each, with
a random pause of 50-250 ms between them (seeded; so changes land at every phase of the
poll), and listens on its own queue bound to ``crmsync.changes`` (``<adapter>.#``). A
change's latency is from its COMMIT returning to its event arriving from the broker
(the adapter publishes with confirms; so this is capture + publish + broker routing).
Printed per contender: p50, p95, max and mean in milliseconds, and the adapter
process's CPU (user+sys, share of one core) while the changes went through: push runs a
capture pass per change instead of one per poll.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import _common as common  # noqa: E402
import aio_pika  # noqa: E402
import msgpack  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from router import topology  # noqa: E402
from tests import broker  # noqa: E402
from tests.integration.test_sql_servers import private_database  # noqa: E402

TABLE = "CREATE TABLE people (id serial PRIMARY KEY, first_name text, updated_at timestamp)"
INSERT = sa.text(
    "INSERT INTO people (first_name, updated_at) VALUES (:n, now() at time zone 'UTC') RETURNING id"
)


def adapter_toml(tmp: Path, name: str, db: str, amqp: str, poll: float, push: bool) -> Path:
    path = tmp / f"{name}.toml"
    path.write_text(
        f'name = "{name}"\n\n[broker]\nurl = "{amqp}"\n\n[database]\nurl = "{db}"\n\n'
        f'[state]\npath = "{tmp / (name + ".state.db")}"\n\n'
        f"[capture]\npoll_interval = {poll}\npush = {'true' if push else 'false'}\n\n"
        '[entities.contact]\ntable = "people"\n\n'
        '[entities.contact.fields]\nfirst_name = "first_name"\n'
    )
    return path


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


Result = tuple[list[float], float]  # latencies (ms), the adapter's CPU share meanwhile


async def contender(
    tmp: Path, amqp: str, name: str, push: bool, args: argparse.Namespace
) -> Result:
    with private_database("postgresql") as db:
        engine = sa.create_engine(db)
        try:
            with engine.begin() as conn:
                conn.exec_driver_sql(TABLE)
            return await _measure(tmp, amqp, db, engine, name, push, args)
        finally:
            engine.dispose()


async def _measure(
    tmp: Path,
    amqp: str,
    db: str,
    engine: sa.Engine,
    name: str,
    push: bool,
    args: argparse.Namespace,
) -> Result:
    committed: dict[str, float] = {}
    arrived: dict[str, float] = {}
    connection = await aio_pika.connect(amqp)
    log = tmp / f"{name}.log"
    proc = None
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(topology.CHANGES, f"{name}.#")
        got = asyncio.Event()

        async def on_event(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            now = time.perf_counter()
            sid = str(msgpack.unpackb(message.body, raw=False)["source_record_id"])
            arrived.setdefault(sid, now)
            got.set()

        await queue.consume(on_event, no_ack=True)
        config = adapter_toml(tmp, name, db, amqp, args.poll_interval, push)
        proc = common.spawn([*_adapter_cmd(), "--config", str(config)], log)
        probe = common.Probe(connection)
        await common.wait_consumer(probe, topology.sink_queue(name), proc, log)

        def insert(i: int) -> str:
            with engine.begin() as conn:
                sid = str(conn.execute(INSERT, {"n": f"n{i}"}).scalar_one())
            committed[sid] = time.perf_counter()  # COMMIT has returned
            return sid

        # Warm-up: one change through before timing (the listener connected, the first
        # passes done, the connections to broker and database open).
        warm = await asyncio.to_thread(insert, -1)
        while warm not in arrived:
            got.clear()
            await asyncio.wait_for(got.wait(), args.poll_interval + 30)
        del committed[warm]
        cpu_before, started = common.cpu_seconds(proc.pid) or 0.0, time.perf_counter()
        rng = random.Random(12)
        for i in range(args.changes):
            await asyncio.to_thread(insert, i)
            await asyncio.sleep(rng.uniform(0.05, 0.25))
        deadline = time.perf_counter() + args.poll_interval * 3 + 10
        while not committed.keys() <= arrived.keys():
            if time.perf_counter() > deadline:
                missing = len(committed.keys() - arrived.keys())
                raise common.BenchError(
                    f"{name}: {missing} changes never arrived\n{common.tail(log)}"
                )
            await asyncio.sleep(0.05)
        cpu = ((common.cpu_seconds(proc.pid) or 0.0) - cpu_before) / (time.perf_counter() - started)
        common.stop(proc, log, f"adapter {name}")
        proc = None
    finally:
        common.kill_quietly(proc)
        await connection.close()
    return [(arrived[sid] - at) * 1000 for sid, at in committed.items()], cpu


def _adapter_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("crmsync")
    prog = [str(exe)] if exe.exists() else [sys.executable, "-m", "router.cli"]
    return [*prog, "adapter"]


async def main(args: argparse.Namespace) -> int:
    vhost = broker.create_vhost("crmsync-bench")
    amqp = broker.amqp_url(vhost)
    router = None
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(args.keep) if args.keep else Path(tmpdir)
        log = tmp / "router.log"
        try:
            router = common.spawn(common.router_cmd(common.write_router_config(tmp, amqp)), log)
            connection = await aio_pika.connect(amqp)
            try:
                probe = common.Probe(connection)
                await common.wait_consumer(probe, topology.ROUTER_CONTROL, router, log)
            finally:
                await connection.close()
            results = {
                "push": await contender(tmp, amqp, "bench_push", True, args),
                "polling": await contender(tmp, amqp, "bench_poll", False, args),
            }
            common.stop(router, log, "router")
            router = None
        finally:
            common.kill_quietly(router)
            broker.delete_vhost(vhost)
    for line in common.machine():
        print(line)
    print(
        f"PostgreSQL, {args.changes} inserts each (one per transaction, 50-250 ms apart), "
        f"poll_interval {args.poll_interval:g} s"
    )
    print(
        f"{'capture':<8} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} {'mean ms':>8} "
        f"{'adapter CPU':>12}"
    )
    for name, (ms, cpu) in results.items():
        print(
            f"{name:<8} {pct(ms, 0.5):>8.1f} {pct(ms, 0.95):>8.1f} {max(ms):>8.1f} "
            f"{statistics.fmean(ms):>8.1f} {cpu:>11.1%}"
        )
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--changes", type=int, default=200)
    parser.add_argument("--poll-interval", type=float, default=1.0)
    parser.add_argument("--keep", help="a folder for the logs and configs (default: temp)")
    common.run_main(main, parser.parse_args(), "push_latency")
