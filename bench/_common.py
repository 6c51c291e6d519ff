"""What the benchmarks share: the workload, the contenders, process and broker helpers.

The benches speak to the router only through its wire contract (topology names, msgpack
ChangeEvents, control requests on ``crmsync.control``) and its command line, so they
keep working while the router's modules move about. Run as a script, this module is the
bare forwarder (``python bench/_common.py --bare-forwarder URL``).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import aio_pika  # noqa: E402
import aiormq  # noqa: E402
import msgpack  # noqa: E402
from aio_pika.abc import DeliveryMode  # noqa: E402

from router import topology  # noqa: E402  (names only: the wire contract)
from tests import broker  # noqa: E402

SOURCE = "src"
TARGETS = ("t1", "t2", "t3")
ENTITIES = {"contact": ["email", "first_name"]}
ROUTING_KEY = f"{SOURCE}.contact.upsert"
CONTENT_TYPE = "application/msgpack"  # router.events.CONTENT_TYPE
START_POLL = 0.005
BATCH = 256  # the bare forwarder's batching (the router uses its own defaults)
LINGER = 0.005
PREFETCH = 1024
STOP_TIMEOUT = 30.0


class BenchError(Exception):
    pass


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


def make_event(i: int, now: datetime | None = None) -> tuple[str, str, bytes]:
    """A valid ChangeEvent from "src" with a fresh record: (event_id, record_id, body).

    Built as the wire format (the msgpack map ``router.events.encode`` writes, same keys
    in the same order), so the bench does not depend on where the model lives."""
    event_id, record_id = str(uuid.uuid4()), str(uuid.uuid4())
    body: bytes = msgpack.packb(
        {
            "v": 1,
            "event_id": event_id,
            "source": SOURCE,
            "actor": SOURCE,
            "entity": "contact",
            "record_id": record_id,
            "source_record_id": str(i),
            "op": "upsert",
            "clock": {SOURCE: 1},
            "fields": {"email": f"user{i}@example.com", "first_name": f"First{i}"},
            "changed": ["email", "first_name"],
            "occurred_at": now or datetime.now(UTC),
            "origin": "live",
            # what an adapter of this version sends: the counter of the edit that set each
            "field_versions": {"email": 1, "first_name": 1},
        },
        datetime=True,
        use_bin_type=True,
    )
    return event_id, record_id, body


def make_events(n: int) -> list[tuple[str, str, bytes]]:
    """N valid, distinct events from "src" (distinct ``record_id``s, clock ``{"src": 1}``)."""
    now = datetime.now(UTC)
    return [make_event(i, now) for i in range(n)]


def change_message(event_id: str, record_id: str, body: bytes) -> aio_pika.Message:
    """An event as an adapter publishes it to ``crmsync.changes``."""
    return aio_pika.Message(
        body,
        content_type=CONTENT_TYPE,
        delivery_mode=DeliveryMode.PERSISTENT,
        message_id=event_id,
        headers={topology.RECORD_KEY_HEADER: record_id},
    )


# -- processes -----------------------------------------------------------------------------
def cpu_seconds(pid: int) -> float | None:
    """user+sys CPU of ``pid`` (all its threads) so far (Linux /proc), or None."""
    return _stat_cpu(Path(f"/proc/{pid}/stat"))


def thread_cpu_seconds(pid: int) -> dict[int, float]:
    """user+sys CPU per thread of ``pid`` (tid -> seconds); the main thread has tid == pid."""
    out: dict[int, float] = {}
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            cpu = _stat_cpu(task / "stat")
            if cpu is not None:
                out[int(task.name)] = cpu
    return out


def _stat_cpu(path: Path) -> float | None:
    try:
        fields = path.read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tail(path: Path, lines: int = 15) -> str:
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
            raise BenchError(f"{what} ignored SIGTERM for {STOP_TIMEOUT:g}s\n{tail(log)}") from None
    if proc.returncode != 0:
        raise BenchError(f"{what} exited with {proc.returncode}\n{tail(log)}")


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
            raise BenchError(f"process died before consuming (rc {proc.returncode})\n{tail(log)}")
        if now > deadline:
            raise BenchError(f"no consumer on {queue} after {timeout:g}s\n{tail(log)}")
        await asyncio.sleep(START_POLL)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for the router's metrics)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- (a) the router ------------------------------------------------------------------------
def write_router_config(tmp: Path, url: str, metrics_port: int = 0) -> Path:
    """A config with the defaults of production: SQLite state in ``tmp`` (WAL,
    synchronous=FULL), default batch tuning; optionally a metrics endpoint on 127.0.0.1."""
    config = tmp / "router.toml"
    text = f'[broker]\nurl = "{url}"\n\n[state]\nurl = "sqlite:///{tmp / "router.db"}"\n'
    if metrics_port:
        text += f"\n[metrics]\nport = {metrics_port}\n"
    config.write_text(text)
    return config


def router_cmd(config: Path) -> list[str]:
    exe = Path(sys.executable).with_name("crmsync")
    prog = [str(exe)] if exe.exists() else [sys.executable, "-m", "router.cli"]
    return [*prog, "router", "--config", str(config), "--log-level", "INFO"]


async def register_adapters(url: str, timeout: float = 10.0) -> None:
    """``register.<name>`` for src and t1..t3 on ``crmsync.control``, replies awaited
    (the router declares each adapter's sink queues while registering it)."""
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        replies = await channel.declare_queue(exclusive=True, auto_delete=True)
        pending: dict[str, asyncio.Future[Any]] = {}

        async def on_reply(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            future = pending.pop(message.correlation_id or "", None)
            if future is not None and not future.done():
                future.set_result(msgpack.unpackb(message.body, raw=False))

        await replies.consume(on_reply, no_ack=True)
        control = await channel.get_exchange(topology.CONTROL, ensure=False)
        for name in (SOURCE, *TARGETS):
            correlation_id = str(uuid.uuid4())
            future = pending[correlation_id] = asyncio.get_running_loop().create_future()
            payload = {"actor": None, "entities": ENTITIES, "version": "bench"}
            await control.publish(
                aio_pika.Message(
                    msgpack.packb(payload, use_bin_type=True),
                    content_type=CONTENT_TYPE,
                    correlation_id=correlation_id,
                    reply_to=replies.name,
                    expiration=timeout,
                ),
                f"register.{name}",
            )
            try:
                reply = await asyncio.wait_for(future, timeout)
            except TimeoutError:
                raise BenchError(f"the router did not answer register.{name}") from None
            if not isinstance(reply, dict) or not reply.get("ok"):
                raise BenchError(f"registering {name} refused: {reply}")
    finally:
        await connection.close()


async def start_registered_router(url: str, config: Path, log: Path) -> subprocess.Popen[bytes]:
    """Start the router, wait for its control consumer, register the four adapters."""
    proc = spawn(router_cmd(config), log)
    try:
        connection = await aio_pika.connect(url)
        try:
            await wait_consumer(Probe(connection), topology.ROUTER_CONTROL, proc, log)
        finally:
            await connection.close()
        await register_adapters(url)
    except BaseException:
        kill_quietly(proc)
        raise
    return proc


async def declare_with_router(url: str, tmp: Path) -> None:
    """The real topology on a fresh vhost, sinks with their DLQ arguments included, made
    by the router itself (start, register, clean shutdown): the bare contender then runs
    on exactly what the router would declare."""
    log = tmp / "declare.log"
    proc = await start_registered_router(url, write_router_config(tmp, url), log)
    stop(proc, log, "router (declaring the topology)")


def spy_cmd(pid: int, out: Path, duration: float | None = None) -> list[str]:
    """py-spy attached to ``pid``: --threads keeps the event loop and the state worker
    apart; --idle keeps waiting frames, so time blocked in fsync shows up too."""
    spy_exe = Path(sys.executable).with_name("py-spy")
    if not spy_exe.exists():
        raise BenchError(f"{spy_exe} missing: .venv/bin/pip install py-spy")
    cmd = [str(spy_exe), "record", "--pid", str(pid), "--rate", "250", "--threads", "--idle"]
    cmd += ["--nonblocking", "--format", "raw", "-o", str(out)]
    if duration is not None:
        cmd += ["--duration", str(max(1, round(duration)))]
    return cmd


# -- (b) the bare forwarder --------------------------------------------------------------------
def bare_cmd(url: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--bare-forwarder", url]


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
    import sqlalchemy

    return [
        f"machine  nproc {nproc}  cpu {model}  {loadavg()}",
        f"broker   RabbitMQ {overview.get('rabbitmq_version')}  "
        f"Erlang {overview.get('erlang_version')}",
        f"python   {sys.version.split()[0]}  aio-pika {aio_pika.__version__}  "
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


def run_main(
    main: Callable[[argparse.Namespace], Awaitable[int]], args: argparse.Namespace, name: str
) -> None:
    """Run a benchmark's ``main``; its expected failures are one line on stderr, exit 1."""
    try:
        sys.exit(asyncio.run(main(args)))
    except BenchError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        sys.exit(1)


def print_profile(collapsed: Path) -> None:
    """The summary of a py-spy profile, or where py-spy said why it wrote nothing."""
    if not collapsed.exists():
        print(f"py-spy wrote nothing; see {collapsed.parent / 'py-spy.log'}")
        return
    for text in summarise_profile(collapsed):
        print(text)


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
                if ("(router/" in f or "(adapters/" in f) and "(router/cli" not in f
            ]
            own[ours[-1] if ours else "(outside crmsync code)"] += count
        lines.append("    by deepest crmsync line:")
        lines += [f"    {c / busy:5.1%}  {n}" for n, c in own.most_common(8)]
    return lines


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="the bare forwarder of bench/")
    parser.add_argument("--bare-forwarder", metavar="URL", required=True)
    asyncio.run(bare_forwarder(parser.parse_args().bare_forwarder))
