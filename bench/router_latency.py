#!/usr/bin/env python
"""Router latency at a fixed event rate against the stateless ceiling, same run.

    .venv/bin/python bench/router_latency.py [--rates 200,500] [--seconds 10] [--runs 2]

A probe publishes ChangeEvents at a fixed rate into ``crmsync.changes`` (routing key
``src.contact.upsert``, header ``x-record-key``, persistent, mandatory, publisher
confirms) and times each one's arrival in ``crmsync.sink.t1`` (looked up by its
``message_id``, the event id, which both contenders keep). Contenders, each on a fresh
vhost and run as a subprocess:

(a) ``router``: the real daemon (``crmsync router --config <tmp toml>``), fresh SQLite
    state (WAL, synchronous=FULL), default tuning, adapters src and t1..t3 registered,
    every event routed to t1 with BCC t2, t3.
(b) ``bare``: the stateless batched forwarder of bench/_common.py on the topology the
    router declared (no decoding, no decisions, no state, no outbox).

Pacing is by absolute time (event k is due at t0 + k/rate; a late send never shifts the
later ones) and the achieved rate is printed. A warm-up is published first and not
counted. Runs are interleaved per rate (router/bare, then bare/router in the next run).
See bench/README.md for what is timed and how to read it.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import _common as c
import aio_pika

from router import topology
from tests import broker

DRAIN_TIMEOUT = 15.0  # after the last publish, for the last arrivals and the BCC sinks
LAG_WARN = 0.005  # a probe later than this (p99) against its schedule: the machine is busy
MAX_EVENTS = 200_000  # per window, warm-up included: the probe stays bounded


@dataclass
class Window:
    """One contender at one rate: the measured part of one run."""

    contender: str
    rate: float  # asked for
    achieved: float  # measured events / their publishing span
    latencies: list[float]  # seconds, publish call -> arrival in crmsync.sink.t1
    lag_p99: float  # how late the probe published against its schedule (s)
    lag_max: float
    cpu: float | None  # share of one core the contender used during the window
    loop_cpu: float | None = None  # of which its main thread (the event loop)
    batches: float | None = None  # router metrics over the window, when exposed
    batch_seconds: float | None = None
    judged: float | None = None
    notes: list[str] = field(default_factory=list)


def pct(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


def scrape(port: int) -> dict[str, float]:
    """The router's Prometheus counters we use (0 where a name is absent)."""
    wanted = {"crmsync_router_batch_seconds_count", "crmsync_router_batch_seconds_sum"}
    out = dict.fromkeys(wanted, 0.0) | {"judged": 0.0}
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        if name in wanted:
            out[name] = float(value)
        elif name.startswith("crmsync_router_events_total{"):
            out["judged"] += float(value)
    return out


async def probe(
    url: str,
    contender: str,
    proc: subprocess.Popen[bytes],
    log: Path,
    rate: float,
    seconds: float,
    warmup: float,
    metrics_port: int = 0,
    on_window: Callable[[], None] | None = None,
) -> Window:
    """Publish warm-up + window at ``rate`` and time every arrival in the t1 sink."""
    loop = asyncio.get_running_loop()
    first = round(warmup * rate)
    events = c.make_events(first + max(2, round(seconds * rate)))
    connection = await aio_pika.connect(url)
    try:
        publish_channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        changes = await publish_channel.get_exchange(topology.CHANGES, ensure=False)
        sink_channel = await connection.channel()
        sink = await sink_channel.declare_queue(topology.sink_queue(c.TARGETS[0]), passive=True)
        arrived: dict[str, float] = {}
        duplicates = 0

        async def on_sink(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            nonlocal duplicates
            now = time.perf_counter()
            if message.message_id in arrived:
                duplicates += 1
            else:
                arrived[message.message_id or ""] = now

        await sink.consume(on_sink, no_ack=True)

        sent: dict[str, float] = {}
        lags: list[float] = []
        confirms: list[asyncio.Future[object]] = []
        cpu0 = threads0 = metrics0 = None
        t_w0 = 0.0
        t0 = time.perf_counter() + 0.05
        for k, (event_id, record_id, body) in enumerate(events):
            due = t0 + k / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if k == first:  # the window opens
                if on_window is not None:
                    on_window()
                cpu0, threads0 = c.cpu_seconds(proc.pid), c.thread_cpu_seconds(proc.pid)
                if metrics_port:
                    metrics0 = loop.run_in_executor(None, scrape, metrics_port)
                t_w0 = time.perf_counter()
            now = time.perf_counter()
            if k >= first:
                lags.append(now - due)
                sent[event_id] = now
            confirms.append(
                asyncio.ensure_future(
                    changes.publish(
                        c.change_message(event_id, record_id, body), c.ROUTING_KEY, mandatory=True
                    )
                )
            )
            if proc.poll() is not None:
                raise c.BenchError(f"{contender} died (rc {proc.returncode})\n{c.tail(log)}")
        t_w1 = time.perf_counter()
        cpu1, threads1 = c.cpu_seconds(proc.pid), c.thread_cpu_seconds(proc.pid)
        metrics1 = await loop.run_in_executor(None, scrape, metrics_port) if metrics_port else None
        results = await asyncio.gather(*confirms, return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            raise c.BenchError(f"{len(failed)} probe publishes failed: {failed[0]!r}")

        deadline = time.perf_counter() + DRAIN_TIMEOUT
        while any(e not in arrived for e in sent) and time.perf_counter() < deadline:
            await asyncio.sleep(0.01)
        lost = [e for e in sent if e not in arrived]
        if lost:
            raise c.BenchError(
                f"{contender}: {len(lost)} of {len(sent)} events never reached the t1 sink "
                f"within {DRAIN_TIMEOUT:g}s\n{c.tail(log)}"
            )
        probe_counts = c.Probe(connection)
        others: list[int] = []
        while time.perf_counter() < deadline:
            others = [await probe_counts.messages(topology.sink_queue(t)) for t in c.TARGETS[1:]]
            if all(n >= len(events) for n in others):
                break
            await asyncio.sleep(0.05)
        if duplicates or any(n != len(events) for n in others):
            raise c.BenchError(
                f"{contender}: t1 saw {duplicates} duplicate(s); t2/t3 hold {others}, "
                f"expected {len(events)} each"
            )
    finally:
        await connection.close()

    span = t_w1 - t_w0
    measured = [sent[e] for e in sent]
    lags.sort()
    window = Window(
        contender,
        rate,
        (len(measured) - 1) / (measured[-1] - measured[0]),
        sorted(arrived[e] - sent[e] for e in sent),
        pct(lags, 0.99),
        lags[-1],
        (cpu1 - cpu0) / span if cpu0 is not None and cpu1 is not None else None,
    )
    if threads0 and proc.pid in threads0 and proc.pid in threads1:
        window.loop_cpu = (threads1[proc.pid] - threads0[proc.pid]) / span
    if metrics0 is not None and metrics1 is not None:
        m0 = await metrics0
        delta = {k: metrics1[k] - m0[k] for k in metrics1}
        window.batches = delta["crmsync_router_batch_seconds_count"]
        window.batch_seconds = delta["crmsync_router_batch_seconds_sum"]
        window.judged = delta["judged"]
    return window


async def run_router(
    rate: float, seconds: float, warmup: float, profile: Path | None = None
) -> Window:
    """The real router on a fresh vhost and state file; with ``profile``, py-spy records
    the window (not the warm-up, not start-up) into ``profile/router-<rate>.collapsed``."""
    vhost = broker.create_vhost("crmsync-bench")
    tmp = Path(tempfile.mkdtemp(prefix="crmsync-bench-"))
    proc: subprocess.Popen[bytes] | None = None
    spies: list[subprocess.Popen[bytes]] = []
    try:
        url = broker.amqp_url(vhost)
        port = c.free_port()
        log = tmp / "router.log"
        proc = await c.start_registered_router(url, c.write_router_config(tmp, url, port), log)
        connection = await aio_pika.connect(url)
        try:
            await c.wait_consumer(c.Probe(connection), topology.INGRESS, proc, log)
        finally:
            await connection.close()
        router = proc

        def attach() -> None:
            if profile is not None:
                out = profile / f"router-{rate:g}.collapsed"
                spies.append(
                    subprocess.Popen(
                        c.spy_cmd(router.pid, out, seconds),
                        stdout=subprocess.DEVNULL,
                        stderr=(profile / "py-spy.log").open("ab"),
                    )
                )

        window = await probe(url, "router", proc, log, rate, seconds, warmup, port, attach)
        for spy in spies:
            spy.wait(60)
        c.stop(proc, log, "router")
        if profile is not None:
            shutil.copy(log, profile / f"router-{rate:g}.log")
        return window
    finally:
        c.kill_quietly(proc)
        for spy in spies:
            c.kill_quietly(spy)
        broker.delete_vhost(vhost)
        shutil.rmtree(tmp, ignore_errors=True)


async def run_bare(rate: float, seconds: float, warmup: float) -> Window:
    vhost = broker.create_vhost("crmsync-bench")
    tmp = Path(tempfile.mkdtemp(prefix="crmsync-bench-"))
    proc: subprocess.Popen[bytes] | None = None
    try:
        url = broker.amqp_url(vhost)
        await c.declare_with_router(url, tmp)
        log = tmp / "bare.log"
        proc = c.spawn(c.bare_cmd(url), log)
        connection = await aio_pika.connect(url)
        try:
            await c.wait_consumer(c.Probe(connection), topology.INGRESS, proc, log)
        finally:
            await connection.close()
        window = await probe(url, "bare", proc, log, rate, seconds, warmup)
        c.stop(proc, log, "bare forwarder")
        return window
    finally:
        c.kill_quietly(proc)
        broker.delete_vhost(vhost)
        shutil.rmtree(tmp, ignore_errors=True)


# -- report ------------------------------------------------------------------------------------
def quantiles(latencies: list[float]) -> str:
    ms = [x * 1000 for x in latencies]
    return (
        f"p50 {pct(ms, 0.50):6.1f}  p90 {pct(ms, 0.90):6.1f}  p99 {pct(ms, 0.99):6.1f}  "
        f"max {ms[-1]:6.1f} ms"
    )


def describe(w: Window) -> str:
    cpu = "cpu n/a"
    if w.cpu is not None:
        cpu = f"cpu {w.cpu:4.0%} of a core"
        if w.loop_cpu is not None:
            cpu += f" (loop {w.loop_cpu:.0%})"
    text = (
        f"{w.contender:6s} {quantiles(w.latencies)}  {cpu}  "
        f"sent {w.achieved:.1f} ev/s (lag p99 {w.lag_p99 * 1000:.1f} ms, "
        f"max {w.lag_max * 1000:.1f})"
    )
    if w.batches:
        text += (
            f"  batches {w.batches:.0f}: {(w.judged or 0) / w.batches:.1f} ev, "
            f"{(w.batch_seconds or 0) / w.batches * 1000:.1f} ms each"
        )
    return text


async def main(args: argparse.Namespace) -> int:
    problem = broker.broker_available()
    if problem:
        print(f"router_latency: {problem}", file=sys.stderr)
        return 2
    for line in c.machine():
        print(line)
    print(
        f"workload fixed-rate probe at {', '.join(f'{r:g}' for r in args.rates)} ev/s into "
        f"{topology.CHANGES}, timed to arrival in {topology.sink_queue('t1')} "
        f"(t1 + BCC t2,t3; quorum queues); warm-up {args.warmup:g} s not counted, "
        f"{args.seconds:g} s measured; {args.runs} run(s), interleaved"
    )
    contenders = [args.only] if args.only else ["router", "bare"]
    windows: dict[tuple[float, str], list[Window]] = {}
    for i in range(args.runs):
        order = contenders if i % 2 == 0 else contenders[::-1]
        for rate in args.rates:
            for who in order:
                if who == "router":
                    w = await run_router(rate, args.seconds, args.warmup)
                else:
                    w = await run_bare(rate, args.seconds, args.warmup)
                windows.setdefault((rate, who), []).append(w)
                print(f"run {i + 1}  {rate:5g} ev/s  {describe(w)}", flush=True)

    print("all runs pooled (latency: publish call -> arrival in the t1 sink):")
    for rate in args.rates:
        p99: dict[str, float] = {}
        for who in contenders:
            runs = windows[(rate, who)]
            pooled = sorted(x for w in runs for x in w.latencies)
            p99[who] = pct(pooled, 0.99)
            cpus = [w.cpu for w in runs if w.cpu is not None]
            cpu = f"  cpu median {statistics.median(cpus):.0%} of a core" if cpus else ""
            print(f"  {rate:5g} ev/s  {who:6s} {quantiles(pooled)}  n={len(pooled)}{cpu}")
        if len(p99) == 2:
            ratio = p99["router"] / p99["bare"]
            print(f"  {rate:5g} ev/s  ratio   router p99 / bare p99 {ratio:.2f}")
    print(f"after    {c.loadavg()} (includes this benchmark's own processes and RabbitMQ)")
    lag = max(w.lag_p99 for ws in windows.values() for w in ws)
    if lag > LAG_WARN:
        print(
            f"warning  the probe itself ran up to {lag * 1000:.0f} ms late (lag p99): the machine "
            "was too busy for these latencies to mean much; compare only ratios, or run again"
        )

    if args.profile:
        out = Path(args.profile)
        out.mkdir(parents=True, exist_ok=True)
        for rate in args.rates:
            w = await run_router(rate, args.seconds, args.warmup, out)
            print(f"profiled router run (not counted; py-spy slows it): {rate:g} ev/s")
            print(f"  {describe(w)}")
            c.print_profile(out / f"router-{rate:g}.collapsed")
    return 0


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rates",
        default="200,500",
        type=lambda s: [float(x) for x in s.split(",") if x.strip()],
        help="events per second, comma-separated (200,500)",
    )
    parser.add_argument(
        "--seconds", type=float, default=10.0, help="measured seconds per rate (10)"
    )
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds not counted first (2)")
    parser.add_argument("--runs", type=int, default=2, help="runs of each contender (2)")
    parser.add_argument("--only", choices=["router", "bare"], help="measure one contender only")
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help="after the counted runs, one extra router run per rate with py-spy on its window",
    )
    args = parser.parse_args(argv)
    if args.runs < 1 or not args.rates or min(args.rates) <= 0:
        parser.error("--runs must be >= 1 and every rate > 0")
    if not 1 <= args.seconds <= 600 or not 0 <= args.warmup <= 60:
        parser.error("--seconds must be in 1..600 and --warmup in 0..60")
    if max(args.rates) * (args.seconds + args.warmup) > MAX_EVENTS:
        parser.error(f"more than {MAX_EVENTS} events in one window: lower --rates or --seconds")
    return args


if __name__ == "__main__":
    c.run_main(main, parse_args(sys.argv[1:]), "router_latency")
