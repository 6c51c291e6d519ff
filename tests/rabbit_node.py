"""A RabbitMQ node of the test's own, for scenarios that kill, stop or alarm a broker.

The machine's broker (5672) is shared by every test running in parallel and is never
touched: this node has its own node name, AMQP / management / distribution ports, data
and log directories, config, enabled-plugins file and Erlang cookie (``HOME`` points into
its temp folder, so neither the cookie nor the CLI tools' state leak anywhere). It
registers with the machine's epmd like any node does; epmd is left alone.

The server is started with the package's ``rabbitmq-server`` script in its own session;
:meth:`RabbitNode.kill` sends SIGKILL to the process group of that session (the script,
``beam.smp`` and its port programs) — the ids of what this object started, never a name.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

SBIN = Path("/usr/lib/rabbitmq/bin")
PLUGINS = ("rabbitmq_management",)  # the tests create vhosts and read queues through it
START_TIMEOUT = 90.0


def _tool(name: str) -> str:
    # The /usr/sbin wrappers switch to the rabbitmq user; run the real scripts directly.
    direct = SBIN / name
    if direct.exists():
        return str(direct)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} not found: a RabbitMQ server package is needed")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _accepts(port: int) -> bool:
    """Whether the port completes an AMQP protocol handshake (not only a TCP accept)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as s:
            s.sendall(b"AMQP\x00\x00\x09\x01")
            return s.recv(1) == b"\x01"  # a Connection.Start method frame
    except OSError:
        return False


def _listens(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


@dataclass(frozen=True)
class TlsListener:
    """A TLS (amqps) listener beside the plain one, on every address of ``hosts``;
    ``mutual``: the node requires a client certificate its CA signed."""

    ca: Path
    cert: Path
    key: Path
    mutual: bool = True
    hosts: tuple[str, ...] = ("127.0.0.1",)

    def conf(self, port: int) -> str:
        listeners = "".join(
            f"listeners.ssl.{n} = {host}:{port}\n" for n, host in enumerate(self.hosts, 1)
        )
        verify = "verify_peer" if self.mutual else "verify_none"
        return (
            f"{listeners}ssl_options.cacertfile = {self.ca}\n"
            f"ssl_options.certfile = {self.cert}\n"
            f"ssl_options.keyfile = {self.key}\n"
            f"ssl_options.verify = {verify}\n"
            f"ssl_options.fail_if_no_peer_cert = {str(self.mutual).lower()}\n"
        )


@dataclass
class RabbitNode:
    """Own node under ``base``; ``start()`` it, ``kill()`` / ``stop()`` / ``start()`` again
    on the same data directory, ``close()`` at the end (kills whatever is left)."""

    base: Path
    name: str = field(default_factory=lambda: f"crmsync-fault-{uuid.uuid4().hex[:8]}@localhost")
    port: int = field(default_factory=free_port)
    mgmt_port: int = field(default_factory=free_port)
    dist_port: int = field(default_factory=free_port)
    tls: TlsListener | None = None
    tls_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        for sub in ("home", "mnesia", "log"):
            (self.base / sub).mkdir(exist_ok=True)
        (self.base / "rabbitmq.conf").write_text(
            f"listeners.tcp.1 = 127.0.0.1:{self.port}\n"
            f"management.tcp.port = {self.mgmt_port}\n"
            "management.tcp.ip = 127.0.0.1\n"
            # Alarms are set by the scenarios themselves; the default disk limit (50 MB)
            # must not trip on a full /tmp by accident.
            "disk_free_limit.absolute = 1MB\n" + (self.tls.conf(self.tls_port) if self.tls else "")
        )
        (self.base / "enabled_plugins").write_text(f"[{','.join(PLUGINS)}].\n")
        (self.base / "rabbitmq-env.conf").write_text("")  # not /etc/rabbitmq's

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def tls_url(self, host: str = "localhost", user: str = "guest:guest") -> str:
        return f"amqps://{user}@{host}:{self.tls_port}/"

    @property
    def mgmt_url(self) -> str:
        return f"http://127.0.0.1:{self.mgmt_port}"

    def env(self) -> dict[str, str]:
        keep = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        return {
            **keep,
            "HOME": str(self.base / "home"),
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_CONFIG_FILE": str(self.base / "rabbitmq.conf"),
            "RABBITMQ_CONF_ENV_FILE": str(self.base / "rabbitmq-env.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(self.base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.base / "log"),
            "RABBITMQ_PID_FILE": str(self.base / "node.pid"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }

    def start(self, timeout: float = START_TIMEOUT) -> float:
        """Start the node (again, on the same data) and wait until it speaks AMQP;
        returns how long that took."""
        if self.running:
            raise RuntimeError(f"{self.name} is already running")
        began = time.monotonic()
        with open(self.base / "log" / "console.log", "ab") as log:
            self.proc = subprocess.Popen(
                [_tool("rabbitmq-server")],
                cwd=self.base,
                env=self.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: kill() reaches all of it
            )
        while not _accepts(self.port) or (self.tls and not _listens(self.tls_port)):
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: {self.tail()}")
            if time.monotonic() - began > timeout:
                self.kill()
                raise RuntimeError(f"{self.name} not up within {timeout:.0f}s: {self.tail()}")
            time.sleep(0.2)
        return time.monotonic() - began

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def pids(self) -> list[int]:
        """The processes of the node's session (the script, beam.smp, port programs)."""
        if self.proc is None:
            return []
        out = subprocess.run(
            ["ps", "-o", "pid=", "-s", str(self.proc.pid)],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        return [int(p) for p in out.split()]

    def kill(self) -> None:
        """``kill -9`` the node: every process of the session this object started."""
        if self.proc is None:
            return
        with_pids = self.pids()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        deadline = time.monotonic() + 10
        while any(alive(p) for p in with_pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.proc = None

    def stop(self, timeout: float = 60.0) -> int | None:
        """Graceful stop (what ``systemctl stop`` does): SIGTERM to the script, which runs
        ``rabbitmqctl stop``; the data directory stays for the next ``start()``."""
        if self.proc is None:
            return None
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None
        # The VM may still be writing its last log lines after the script returned.
        deadline = time.monotonic() + 15
        while self.pids() and time.monotonic() < deadline:
            time.sleep(0.1)
        self.proc = None
        return code

    def ctl(self, *args: str, timeout: float = 60.0) -> str:
        """``rabbitmqctl -n <node> ...``; raises with its output when it fails."""
        done = subprocess.run(
            [_tool("rabbitmqctl"), "-n", self.name, *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {done.stdout}{done.stderr}")
        return done.stdout

    def close_all_connections(self, why: str = "fault injection") -> None:
        self.ctl("close_all_connections", why)

    def set_vm_memory_high_watermark(self, fraction: float) -> None:
        self.ctl("set_vm_memory_high_watermark", str(fraction))

    def set_disk_free_limit(self, limit: str) -> None:
        self.ctl("set_disk_free_limit", limit)

    def tail(self, lines: int = 5) -> str:
        path = self.base / "log" / "console.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return " | ".join(text.strip().splitlines()[-lines:])

    def close(self) -> None:
        self.kill()


def alive(pid: int) -> bool:
    """Whether process ``pid`` still exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
