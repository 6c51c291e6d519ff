#!/usr/bin/env python
"""Router throughput against a stateless ceiling, same machine, same run.

    .venv/bin/python bench/router_throughput.py [--events N] [--runs 3] [--profile DIR]

(a) ``router``: N persistent ChangeEvents through the real router daemon, run as a
    subprocess exactly as in production (``crmsync router --config <tmp toml>``), with
    its state in a fresh SQLite file (WAL, synchronous=FULL: the production defaults)
    and three subscribers t1, t2, t3 of the source "src".
(b) ``bare``: a stateless batched aio-pika forwarder (also a subprocess: this script
    re-invoked with ``--bare-forwarder URL``) that moves the same N preloaded messages
    the way the router publishes them — one publish per event to ``crmsync.deliveries``
    with routing key ``t1`` and ``BCC=["t2","t3"]``, mandatory, confirms gathered per
    batch of 256 (linger 5 ms), one multi-ack per batch. This is the ceiling for any
    router design on this broker and machine: no decoding, no decisions, no state.

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
import collections
import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import aio_pika  # noqa: E402
import aiormq  # noqa: E402
from aio_pika.abc import DeliveryMode  # noqa: E402

from router import topology  # noqa: E402
from router.control import RpcClient  # noqa: E402
from router.events import CONTENT_TYPE, ChangeEvent, encode  # noqa: E402
from tests import broker  # noqa: E402

SOURCE = "src"
TARGETS = ("t1", "t2", "t3")
ENTITIES = {"contact": ["email", "first_name"]}
ROUTING_KEY = f"{SOURCE}.contact.upsert"
PRELOAD_BATCH = 1000
START_POLL = 0.005
END_POLL = 0.050
BATCH = 256
LINGER = 0.005
PREFETCH = 1024
STOP_TIMEOUT = 30.0


class BenchError(Exception):
    pass


@dataclass
class RunResult:
    rate: float  # events/s
    seconds: float  # timed interval
    startup: float  # spawn -> consumer attached (excluded from the rate)
    first_out: float  # consumer attached -> first message seen in a sink
    cpu: float | None  # CPU seconds (user+sys) the consumer process used while timed


# -- broker helpers --------------------------------------------------------------------
class Probe:
    """Live queue counts through passive declares (re-opens its channel after a 404)."""

    def __init__(self, connection: aio_pika.abc.AbstractConnection) -> None:
        self._connection = connection
        self._channel: aio_pika.abc.AbstractChannel | None = None

    async def counts(self, queue: str) -> tuple[int, int] | None:
        """(messages, consumers), or None when the queue does not exist yet."""
        if self._channel is None or self._channel.is_closed:
            self._channel = await self._connection.channel()
        try:
            q = await self._channel.declare_queue(queue, passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            self._channel = None
            return None
        result = q.declaration_result
        return int(result.message_count or 0), int(result.consumer_count or 0)

    async def messages(self, queue: str) -> int:
        counts = await self.counts(queue)
        return counts[0] if counts else 0


def make_events(n: int) -> list[tuple[str, str, bytes]]:
    """N valid, distinct events from "src": (event_id, record_id, body)."""
    now = datetime.now(UTC)
    out = []
    for i in range(n):
        event = ChangeEvent(
            event_id=str(uuid.uuid4()),
            source=SOURCE,
            actor=SOURCE,
            entity="contact",
            record_id=str(uuid.uuid4()),
            source_record_id=str(i),
            op="upsert",
            clock={SOURCE: 1},
            fields={"email": f"user{i}@example.com", "first_name": f"First{i}"},
            changed=["email", "first_name"],
            occurred_at=now,
        )
        out.append((event.event_id, event.record_id, encode(event)))
    return out


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
                        aio_pika.Message(
                            body,
                            content_type=CONTENT_TYPE,
                            delivery_mode=DeliveryMode.PERSISTENT,
                            message_id=event_id,
                            headers={topology.RECORD_KEY_HEADER: record_id},
                        ),
                        ROUTING_KEY,
                        mandatory=True,
                    )
                    for event_id, record_id, body in events[start : start + PRELOAD_BATCH]
                )
            )
        probe = Probe(connection)
        depth = await probe.messages(topology.INGRESS)
        if depth != len(events):
            raise BenchError(f"preloaded {len(events)} but ingress holds {depth}")
    finally:
        await connection.close()


# -- subprocess handling -----------------------------------------------------------------
def cpu_seconds(pid: int) -> float | None:
    """user+sys CPU of ``pid`` so far (Linux /proc), or None where unavailable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def spawn(cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env.pop("CRMSYNC_AMQP_URL", None)  # the temp config names the vhost
    env.pop("CRMSYNC_CONFIG", None)
    with log.open("ab") as fh:
        return subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=str(ROOT))


def stop(proc: subprocess.Popen[bytes], log: Path, what: str) -> None:
    """SIGTERM (the clean shutdown) and insist on exit code 0."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise BenchError(
                f"{what} ignored SIGTERM for {STOP_TIMEOUT:g}s\n{_tail(log)}"
            ) from None
    if proc.returncode != 0:
        raise BenchError(f"{what} exited with {proc.returncode}\n{_tail(log)}")


def kill_quietly(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.kill()
        proc.wait()


async def wait_consumer(
    probe: Probe, queue: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60.0
) -> float:
    """perf_counter() at the first poll that sees a consumer on ``queue``."""
    deadline = time.perf_counter() + timeout
    while True:
        counts = await probe.counts(queue)
        now = time.perf_counter()
        if counts is not None and counts[1] >= 1:
            return now
        if proc.poll() is not None:
            raise BenchError(f"process died before consuming (rc {proc.returncode})\n{_tail(log)}")
        if now > deadline:
            raise BenchError(f"no consumer on {queue} after {timeout:g}s\n{_tail(log)}")
        await asyncio.sleep(START_POLL)


async def timed_drain(
    url: str, n: int, spawn_proc: Any, log: Path
) -> tuple[RunResult, subprocess.Popen[bytes]]:
    """Spawn the consumer, start the clock when it attaches, stop it when every sink holds N."""
    connection = await aio_pika.connect(url)
    try:
        probe = Probe(connection)
        t_spawn = time.perf_counter()
        proc = spawn_proc()
        try:
            t0 = await wait_consumer(probe, topology.INGRESS, proc, log)
            cpu0 = cpu_seconds(proc.pid)
            first: float | None = None
            last_total, last_progress = -1, t0
            stall = max(30.0, n / 500)
            while True:
                depths = [await probe.messages(topology.sink_queue(t)) for t in TARGETS]
                now = time.perf_counter()
                if first is None and any(depths):
                    first = now
                if all(d >= n for d in depths):
                    cpu1 = cpu_seconds(proc.pid)
                    if any(d > n for d in depths):
                        raise BenchError(f"sinks hold more than {n}: {depths} (duplicates)")
                    break
                if sum(depths) != last_total:
                    last_total, last_progress = sum(depths), now
                if proc.poll() is not None:
                    raise BenchError(
                        f"consumer died (rc {proc.returncode}) at {depths}\n{_tail(log)}"
                    )
                if now - last_progress > stall:
                    raise BenchError(f"no progress for {stall:g}s, sinks at {depths}\n{_tail(log)}")
                await asyncio.sleep(END_POLL)
        except BaseException:
            kill_quietly(proc)
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
def router_cmd(config: Path) -> list[str]:
    exe = Path(sys.executable).with_name("crmsync")
    prog = [str(exe)] if exe.exists() else [sys.executable, "-m", "router.cli"]
    return [*prog, "router", "--config", str(config), "--log-level", "INFO"]


async def register_adapters(url: str) -> None:
    connection = await aio_pika.connect_robust(url)
    try:
        rpc = RpcClient(connection)
        for name in (SOURCE, *TARGETS):
            reply = await rpc.call(
                f"register.{name}",
                {"actor": None, "entities": ENTITIES, "version": "bench"},
            )
            if not reply.get("ok"):
                raise BenchError(f"registering {name} refused: {reply}")
    finally:
        await connection.close()


async def run_router_once(n: int, profile: Path | None = None) -> RunResult:
    """One router run on a fresh vhost and a fresh state file.

    With ``profile``, py-spy attaches by pid to the timed router right after the spawn
    (ptrace rights needed: root, or ptrace_scope 0) and writes collapsed stacks to
    ``profile/router.collapsed`` when the router exits. Such a run is slower.
    """
    spy_exe = Path(sys.executable).with_name("py-spy")
    if profile is not None:
        if not spy_exe.exists():
            raise BenchError(f"{spy_exe} missing: .venv/bin/pip install py-spy")
        profile.mkdir(parents=True, exist_ok=True)
    vhost = broker.create_vhost("crmsync-bench")
    tmp = Path(tempfile.mkdtemp(prefix="crmsync-bench-"))
    proc: subprocess.Popen[bytes] | None = None
    spies: list[subprocess.Popen[bytes]] = []
    try:
        url = broker.amqp_url(vhost)
        config = tmp / "router.toml"
        config.write_text(
            f'[broker]\nurl = "{url}"\n\n[state]\nurl = "sqlite:///{tmp / "router.db"}"\n'
        )
        log = tmp / "router.log"
        events = make_events(n)

        # 1. first start: register the adapters (the router declares their sinks), then
        #    the clean shutdown (SIGTERM, exit 0). Registrations persist in the state file.
        proc = spawn(router_cmd(config), log)
        connection = await aio_pika.connect(url)
        try:
            await wait_consumer(Probe(connection), topology.ROUTER_CONTROL, proc, log)
        finally:
            await connection.close()
        await register_adapters(url)
        stop(proc, log, "router (registration phase)")

        # 2. preload while nothing consumes the ingress queue.
        await preload(url, events)

        # 3. second start on the same state, timed from the ingress consumer attaching.
        def start() -> subprocess.Popen[bytes]:
            router = spawn(router_cmd(config), log)
            if profile is not None:
                # --threads: the event loop and the crmsync-state worker apart;
                # --idle: keep waiting frames, so time blocked in fsync shows up too.
                spies.append(
                    subprocess.Popen(
                        [
                            str(spy_exe),
                            "record",
                            "--pid",
                            str(router.pid),
                            "--rate",
                            "250",
                            "--threads",
                            "--idle",
                            "--nonblocking",
                            "--format",
                            "raw",
                            "-o",
                            str(profile / "router.collapsed"),
                        ],
                        stdout=subprocess.DEVNULL,
                        stderr=(profile / "py-spy.log").open("wb"),
                    )
                )
            return router

        result, proc = await timed_drain(url, n, start, log)
        stop(proc, log, "router")
        for spy in spies:
            spy.wait(30)
        if profile is not None:
            shutil.copy(log, profile / "router.log")
        return result
    finally:
        kill_quietly(proc)
        for spy in spies:
            kill_quietly(spy)
        broker.delete_vhost(vhost)
        shutil.rmtree(tmp, ignore_errors=True)


# -- (b) the bare forwarder --------------------------------------------------------------------
async def bare_forwarder(url: str) -> None:
    """Stateless ceiling: ingress -> crmsync.deliveries (t1 + BCC t2,t3), batched."""
    connection = await aio_pika.connect_robust(url)
    publish_channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
    deliveries = await publish_channel.get_exchange(topology.DELIVERIES, ensure=False)
    consume_channel = await connection.channel()
    await consume_channel.set_qos(prefetch_count=PREFETCH)
    ingress = await consume_channel.declare_queue(topology.INGRESS, passive=True)

    buffer: list[aio_pika.abc.AbstractIncomingMessage] = []
    arrived = asyncio.Event()
    stopping = asyncio.Event()

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        buffer.append(message)  # async callback: a plain function is ~20x slower
        arrived.set()

    def on_term() -> None:
        stopping.set()
        arrived.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_term)
    await ingress.consume(on_message)
    bcc = list(TARGETS[1:])
    while not stopping.is_set():
        await arrived.wait()
        if stopping.is_set():
            break
        deadline = time.monotonic() + LINGER
        while len(buffer) < BATCH and time.monotonic() < deadline:
            await asyncio.sleep(LINGER / 5)
        batch = buffer[:BATCH]
        del buffer[: len(batch)]
        if not buffer:
            arrived.clear()
        if not batch:
            continue
        await asyncio.gather(
            *(
                deliveries.publish(
                    aio_pika.Message(
                        m.body,
                        content_type=CONTENT_TYPE,
                        delivery_mode=DeliveryMode.PERSISTENT,
                        message_id=m.message_id,
                        headers={
                            topology.RECORD_KEY_HEADER: (m.headers or {}).get(
                                topology.RECORD_KEY_HEADER, ""
                            ),
                            "BCC": bcc,
                        },
                    ),
                    TARGETS[0],
                    mandatory=True,
                )
                for m in batch
            )
        )
        await batch[-1].ack(multiple=True)
    await connection.close()


async def run_bare_once(n: int) -> RunResult:
    vhost = broker.create_vhost("crmsync-bench")
    tmp = Path(tempfile.mkdtemp(prefix="crmsync-bench-"))
    proc: subprocess.Popen[bytes] | None = None
    try:
        url = broker.amqp_url(vhost)
        log = tmp / "bare.log"
        connection = await aio_pika.connect(url)
        try:  # the same topology the router declares, sinks included
            await topology.declare(
                connection, [s for a in (SOURCE, *TARGETS) for s in topology.adapter_queues(a)]
            )
        finally:
            await connection.close()
        await preload(url, make_events(n))

        def start() -> subprocess.Popen[bytes]:
            me = str(Path(__file__).resolve())
            return spawn([sys.executable, me, "--bare-forwarder", url], log)

        result, proc = await timed_drain(url, n, start, log)
        stop(proc, log, "bare forwarder")
        return result
    finally:
        kill_quietly(proc)
        broker.delete_vhost(vhost)
        shutil.rmtree(tmp, ignore_errors=True)


# -- report ------------------------------------------------------------------------------------
def machine() -> list[str]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    try:
        nproc = len(os.sched_getaffinity(0))
    except AttributeError:
        nproc = os.cpu_count() or 0
    overview: dict[str, Any] = broker._request("GET", "/overview")  # type: ignore[assignment]
    import aio_pika as ap
    import sqlalchemy

    return [
        f"machine  nproc {nproc}  cpu {model}  {loadavg()}",
        f"broker   RabbitMQ {overview.get('rabbitmq_version')}  "
        f"Erlang {overview.get('erlang_version')}",
        f"python   {sys.version.split()[0]}  aio-pika {ap.__version__}  "
        f"SQLAlchemy {sqlalchemy.__version__}",
    ]


def loadavg() -> str:
    """Other work on the machine skews both contenders; say how busy it was."""
    try:
        one, five, _ = os.getloadavg()
    except OSError:
        return "load n/a"
    return f"load avg 1m {one:.2f} 5m {five:.2f}"


# Leaf frames that mean "this thread is waiting": the event loop in epoll, the state
# worker waiting for work. Everything else counts as busy (including waiting for the GIL).
IDLE_LEAVES = ("EpollSelector.select (", "_worker (concurrent/futures/thread.py:81)")


def _short(frame: str) -> str:
    """``fn (path/to/file.py:123)`` -> ``fn (path/to/file.py)``."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit(':', 1)[0]})" if where else name


def summarise_profile(path: Path, top: int = 18) -> list[str]:
    """Per thread: how busy it was, and where the busy samples went (inclusive)."""
    threads: dict[str, list[tuple[list[str], int]]] = collections.defaultdict(list)
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack:
            frames = stack.split(";")
            threads[frames[0]].append((frames[1:], int(count)))
    skip = ("threading.py", "concurrent/futures", "asyncio/", "typer/", "<module> (", "cli.py")
    lines = [f"profile  {path} (py-spy raw, --idle --threads)"]
    for thread, rows in sorted(threads.items()):
        total = sum(c for _, c in rows)
        busy_rows = [(f, c) for f, c in rows if f and not f[-1].startswith(IDLE_LEAVES)]
        busy = sum(c for _, c in busy_rows) or 1
        lines.append(f"  {thread}: busy {busy / total:.0%} of {total} samples; of the busy ones:")
        inclusive: collections.Counter[str] = collections.Counter()
        for frames, count in busy_rows:
            for name in {_short(f) for f in frames}:
                inclusive[name] += count
        shown = [(n, c) for n, c in inclusive.most_common() if not any(k in n for k in skip)]
        lines += [f"    {c / busy:5.1%}  {n}" for n, c in shown[:top]]
        own: collections.Counter[str] = collections.Counter()
        for frames, count in busy_rows:
            ours = [
                f
                for f in frames
                if ("(router/" in f or "(adapters/" in f) and "(router/cli.py" not in f
            ]
            own[ours[-1] if ours else "(outside crmsync code)"] += count
        lines.append("    by deepest crmsync line:")
        lines += [f"    {c / busy:5.1%}  {n}" for n, c in own.most_common(8)]
    return lines


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
    for line in machine():
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
    print(f"after   {loadavg()} (includes this benchmark's own processes and RabbitMQ)")

    if args.profile:
        out = Path(args.profile)
        r = await run_router_once(args.events, out)
        print(f"profiled router run (not counted; py-spy slows it): {r.rate:.0f} ev/s")
        collapsed = out / "router.collapsed"
        if collapsed.exists():
            for text in summarise_profile(collapsed):
                print(text)
        else:
            print(f"py-spy wrote nothing; see {out / 'py-spy.log'}")
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
    parser.add_argument("--bare-forwarder", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.events < 1 or args.runs < 1:
        parser.error("--events and --runs must be >= 1")
    return args


if __name__ == "__main__":
    ns = parse_args(sys.argv[1:])
    if ns.bare_forwarder:
        asyncio.run(bare_forwarder(ns.bare_forwarder))
        sys.exit(0)
    try:
        sys.exit(asyncio.run(main(ns)))
    except BenchError as exc:
        print(f"router_throughput: {exc}", file=sys.stderr)
        sys.exit(1)
