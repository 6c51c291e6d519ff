#!/usr/bin/env python
"""Router throughput against a stateless ceiling, same machine, same run.

    .venv/bin/python bench/router_throughput.py [--events N] [--runs 3] [--profile DIR]

(a) ``router``: N persistent ChangeEvents through the real router daemon, run as a
    subprocess exactly as in production (``crmsync router --config <tmp toml>``), with
    its state in a fresh SQLite file (WAL, synchronous=FULL: the production defaults)
    and three subscribers t1, t2, t3 of the source "src".
(b) ``bare``: a stateless batched aio-pika forwarder (also a subprocess: bench/_common.py
    run with ``--bare-forwarder URL``, on the topology the router declared) that moves
    the same N preloaded messages the way the router publishes them — one publish per
    event to ``crmsync.deliveries`` with routing key ``t1`` and ``BCC=["t2","t3"]``,
    mandatory, confirms gathered per batch of 256 (linger 5 ms), one multi-ack per batch.
    This is the ceiling for any router design on this broker and machine: no decoding,
    no decisions, no state.

Both consume from a preloaded ``crmsync.router.ingress`` (quorum queue) and are timed
until the three sink quorum queues each hold N messages. See bench/README.md.

How the router is paused while we preload (it refuses events from unregistered
sources, so registration has to come first): we start the router, register the four
adapters over the control plane (which also makes it declare their sink queues), stop
it with SIGTERM (its clean shutdown: finish the batch in hand, exit 0; registrations
persist in its SQLite state), preload N events while nothing consumes the ingress queue,
and then start the router again on the same state file. That is an ordinary production
restart, so nothing is faked; the second start is what we time.

Where the clock starts: at the moment the ingress queue's consumer count becomes 1
(polled with passive queue.declare every 5 ms; the declare-ok carries live counts from
the queue leader, unlike the management API whose stats lag by up to 5 s). This excludes
process start-up, imports, SQLite open and topology declaration for both contenders, and
includes everything from the first delivery on. The clock stops at the first poll (every
50 ms, passive declares again) that sees all three sinks at >= N messages, i.e. every
delivery was routed and confirmed. Worst-case timing error: ~5 ms + ~50 ms per run.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _common as c
import aio_pika

from router import topology
from tests import broker

PRELOAD_BATCH = 1000
END_POLL = 0.050


@dataclass
class RunResult:
    rate: float  # events/s
    seconds: float  # timed interval
    startup: float  # spawn -> consumer attached (excluded from the rate)
    first_out: float  # consumer attached -> first message seen in a sink
    cpu: float | None  # CPU seconds (user+sys) the consumer process used while timed


# -- workload -----------------------------------------------------------------------------
async def preload(url: str, events: list[tuple[str, str, bytes]]) -> None:
    """Publish to crmsync.changes like an adapter does: persistent, mandatory, confirms
    gathered per batch."""
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        exchange = await channel.get_exchange(topology.CHANGES, ensure=False)
        for start in range(0, len(events), PRELOAD_BATCH):
            await asyncio.gather(
                *(
                    exchange.publish(
                        c.change_message(event_id, record_id, body), c.ROUTING_KEY, mandatory=True
                    )
                    for event_id, record_id, body in events[start : start + PRELOAD_BATCH]
                )
            )
        probe = c.Probe(connection)
        depth = await probe.messages(topology.INGRESS)
        if depth != len(events):
            raise c.BenchError(f"preloaded {len(events)} but ingress holds {depth}")
    finally:
        await connection.close()


# -- timing -------------------------------------------------------------------------------
async def timed_drain(
    url: str, n: int, spawn_proc: Any, log: Path
) -> tuple[RunResult, subprocess.Popen[bytes]]:
    """Spawn the consumer, start the clock when it attaches, stop it when every sink holds N."""
    connection = await aio_pika.connect(url)
    try:
        probe = c.Probe(connection)
        t_spawn = time.perf_counter()
        proc = spawn_proc()
        try:
            t0 = await c.wait_consumer(probe, topology.INGRESS, proc, log)
            cpu0 = c.cpu_seconds(proc.pid)
            first: float | None = None
            last_total, last_progress = -1, t0
            stall = max(30.0, n / 500)
            while True:
                depths = [await probe.messages(topology.sink_queue(t)) for t in c.TARGETS]
                now = time.perf_counter()
                if first is None and any(depths):
                    first = now
                if all(d >= n for d in depths):
                    cpu1 = c.cpu_seconds(proc.pid)
                    if any(d > n for d in depths):
                        raise c.BenchError(f"sinks hold more than {n}: {depths} (duplicates)")
                    break
                if sum(depths) != last_total:
                    last_total, last_progress = sum(depths), now
                if proc.poll() is not None:
                    raise c.BenchError(
                        f"consumer died (rc {proc.returncode}) at {depths}\n{c.tail(log)}"
                    )
                if now - last_progress > stall:
                    raise c.BenchError(
                        f"no progress for {stall:g}s, sinks at {depths}\n{c.tail(log)}"
                    )
                await asyncio.sleep(END_POLL)
        except BaseException:
            c.kill_quietly(proc)
            raise
        seconds = now - t0
        return (
            RunResult(
                n / seconds,
                seconds,
                t0 - t_spawn,
                (first or now) - t0,
                cpu1 - cpu0 if cpu0 is not None and cpu1 is not None else None,
            ),
            proc,
        )
    finally:
        await connection.close()


# -- (a) the router ------------------------------------------------------------------------
async def run_router_once(n: int, profile: Path | None = None) -> RunResult:
    """One router run on a fresh vhost and a fresh state file.

    With ``profile``, py-spy attaches by pid to the timed router right after the spawn
    (ptrace rights needed: root, or ptrace_scope 0) and writes collapsed stacks to
    ``profile/router.collapsed`` when the router exits. Such a run is slower.
    """
    if profile is not None:
        profile.mkdir(parents=True, exist_ok=True)
    vhost = broker.create_vhost("crmsync-bench")
    tmp = Path(tempfile.mkdtemp(prefix="crmsync-bench-"))
    proc: subprocess.Popen[bytes] | None = None
    spies: list[subprocess.Popen[bytes]] = []
    try:
        url = broker.amqp_url(vhost)
        config = c.write_router_config(tmp, url)
        log = tmp / "router.log"
        events = c.make_events(n)

        # 1. first start: register the adapters (the router declares their sinks), then
        #    the clean shutdown (SIGTERM, exit 0). Registrations persist in the state file.
        proc = await c.start_registered_router(url, config, log)
        c.stop(proc, log, "router (registration phase)")

        # 2. preload while nothing consumes the ingress queue.
        await preload(url, events)

        # 3. second start on the same state, timed from the ingress consumer attaching.
        def start() -> subprocess.Popen[bytes]:
            router = c.spawn(c.router_cmd(config), log)
            if profile is not None:
                spies.append(
                    subprocess.Popen(
                        c.spy_cmd(router.pid, profile / "router.collapsed"),
                        stdout=subprocess.DEVNULL,
                        stderr=(profile / "py-spy.log").open("wb"),
                    )
                )
            return router

        result, proc = await timed_drain(url, n, start, log)
        c.stop(proc, log, "router")
        for spy in spies:
            spy.wait(30)
        if profile is not None:
            shutil.copy(log, profile / "router.log")
        return result
    finally:
        c.kill_quietly(proc)
        for spy in spies:
            c.kill_quietly(spy)
        broker.delete_vhost(vhost)
        shutil.rmtree(tmp, ignore_errors=True)


# -- (b) the bare forwarder (bench/_common.py) -------------------------------------------------
async def run_bare_once(n: int) -> RunResult:
    vhost = broker.create_vhost("crmsync-bench")
    tmp = Path(tempfile.mkdtemp(prefix="crmsync-bench-"))
    proc: subprocess.Popen[bytes] | None = None
    try:
        url = broker.amqp_url(vhost)
        log = tmp / "bare.log"
        await c.declare_with_router(url, tmp)  # the same topology, sinks included
        await preload(url, c.make_events(n))
        result, proc = await timed_drain(url, n, lambda: c.spawn(c.bare_cmd(url), log), log)
        c.stop(proc, log, "bare forwarder")
        return result
    finally:
        c.kill_quietly(proc)
        broker.delete_vhost(vhost)
        shutil.rmtree(tmp, ignore_errors=True)


# -- report ------------------------------------------------------------------------------------
def describe(r: RunResult, n: int) -> str:
    cpu = (
        f"; its cpu {r.cpu * 1e6 / n:.0f} us/ev = {r.cpu / r.seconds:.0%} of a core"
        if r.cpu is not None
        else ""
    )
    return (
        f"{r.rate:7.0f} ev/s  ({r.seconds:.2f} s timed; start-up {r.startup:.2f} s excluded; "
        f"first delivery after {r.first_out * 1000:.0f} ms{cpu})"
    )


async def main(args: argparse.Namespace) -> int:
    problem = broker.broker_available()
    if problem:
        print(f"router_throughput: {problem}", file=sys.stderr)
        return 2
    for line in c.machine():
        print(line)
    print(
        f"workload {args.events} persistent events, 3 subscribers (t1 + BCC t2,t3), "
        f"quorum queues, {args.runs} run(s) each, interleaved"
    )
    router_runs: list[RunResult] = []
    bare_runs: list[RunResult] = []
    for i in range(args.runs):
        if not args.only or args.only == "router":
            r = await run_router_once(args.events)
            router_runs.append(r)
            print(f"run {i + 1}  router  {describe(r, args.events)}", flush=True)
        if not args.only or args.only == "bare":
            b = await run_bare_once(args.events)
            bare_runs.append(b)
            print(f"run {i + 1}  bare    {describe(b, args.events)}", flush=True)

    def line(label: str, runs: list[RunResult]) -> float:
        med = statistics.median(r.rate for r in runs)
        cpus = [r.cpu for r in runs if r.cpu is not None]
        cpu = (
            f"  cpu median {statistics.median(cpus) * 1e6 / args.events:.0f} us/ev" if cpus else ""
        )
        print(
            f"{label:7s} median {med:.0f} ev/s  runs: "
            + " ".join(f"{r.rate:.0f}" for r in runs)
            + cpu
        )
        return med

    med_router = line("router", router_runs) if router_runs else None
    med_bare = line("bare", bare_runs) if bare_runs else None
    if med_router and med_bare:
        print(f"ratio   router/bare {med_router / med_bare:.2f}")
    print(f"after   {c.loadavg()} (includes this benchmark's own processes and RabbitMQ)")

    if args.profile:
        out = Path(args.profile)
        r = await run_router_once(args.events, out)
        print(f"profiled router run (not counted; py-spy slows it): {r.rate:.0f} ev/s")
        c.print_profile(out / "router.collapsed")
    return 0


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20000, help="events per run (20000)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each contender (3)")
    parser.add_argument("--only", choices=["router", "bare"], help="measure one contender only")
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help="after the counted runs, one extra router run under py-spy; stacks go to DIR",
    )
    args = parser.parse_args(argv)
    if args.events < 1 or args.runs < 1:
        parser.error("--events and --runs must be >= 1")
    return args


if __name__ == "__main__":
    c.run_main(main, parse_args(sys.argv[1:]), "router_throughput")
