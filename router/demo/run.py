"""``crmsync demo``: the whole system on this machine, as separate processes.

Three SQLite CRMs with different schemas, the router and three adapters: seed contacts
in one CRM and watch them reach the others, edit and delete, then make a concurrent
edit of one record in two CRMs and watch the router detect and converge it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from router.config import AMQP_URL_ENV, BrokerConfig
from router.demo.crms import CRMS, DemoDb
from router.errors import CrmsyncError

DEMO_VHOST = "crmsync-demo"
DEFAULT_BROKER = "amqp://guest:guest@127.0.0.1:5672/"
STEP_TIMEOUT = 120.0


class DemoFailed(CrmsyncError):
    pass


def _management(url: str, method: str, path: str) -> None:
    parts = urlsplit(url)
    req = urllib.request.Request(
        f"http://{parts.hostname}:15672/api{path}",
        method=method,
        data=b"{}" if method == "PUT" else None,
    )
    token = base64.b64encode(f"{parts.username}:{parts.password}".encode()).decode()
    req.add_header("Authorization", f"Basic {token}")
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=5):
        pass


def _fresh_vhost(base_url: str) -> str | None:
    """(Re)create the demo's own vhost so a demo never sees an earlier run's messages.
    Returns None when neither the management API nor rabbitmqctl can do it."""
    with contextlib.suppress(urllib.error.HTTPError, OSError):
        with contextlib.suppress(urllib.error.HTTPError):
            _management(base_url, "DELETE", f"/vhosts/{DEMO_VHOST}")
        _management(base_url, "PUT", f"/vhosts/{DEMO_VHOST}")
        user = urlsplit(base_url).username
        _management(base_url, "PUT", f"/permissions/{DEMO_VHOST}/{user}")
        return DEMO_VHOST
    ctl = shutil.which("rabbitmqctl")
    if ctl and urlsplit(base_url).hostname in ("127.0.0.1", "localhost"):
        user = urlsplit(base_url).username or "guest"
        subprocess.run([ctl, "-q", "delete_vhost", DEMO_VHOST], capture_output=True, check=False)
        made = subprocess.run(
            [ctl, "-q", "add_vhost", DEMO_VHOST], capture_output=True, check=False
        )
        perms = subprocess.run(
            [ctl, "-q", "set_permissions", "-p", DEMO_VHOST, user, ".*", ".*", ".*"],
            capture_output=True,
            check=False,
        )
        if made.returncode == 0 and perms.returncode == 0:
            return DEMO_VHOST
    return None


def _broker_url(console: Console) -> str:
    explicit = os.environ.get(AMQP_URL_ENV)
    if explicit:
        _check_reachable(explicit)
        return explicit
    _check_reachable(DEFAULT_BROKER)
    vhost = _fresh_vhost(DEFAULT_BROKER)
    if vhost is None:
        console.print("[yellow]could not create a vhost of its own; running on vhost /[/]")
        return DEFAULT_BROKER
    return DEFAULT_BROKER + vhost


def _check_reachable(url: str) -> None:
    from router.broker.aio import connect

    async def probe() -> None:
        connection = await connect(BrokerConfig(url=url), "crmsync-demo-probe")
        await connection.close()

    asyncio.run(probe())


class Fleet:
    """The router and adapters as child processes, with their logs in ``workdir/logs``."""

    def __init__(self, workdir: Path, url: str) -> None:
        self.workdir = workdir
        # Their logs go to files a person reads (the demo, the tests): key=value lines.
        self.env = {
            **os.environ,
            AMQP_URL_ENV: url,
            "PYTHONUNBUFFERED": "1",
            "CRMSYNC_LOG_FORMAT": os.environ.get("CRMSYNC_LOG_FORMAT", "logfmt"),
        }
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        (workdir / "logs").mkdir(exist_ok=True)

    def start(self, name: str, *args: str) -> None:
        # The child gets its own copy of the descriptor; ours can close at once.
        with open(self.workdir / "logs" / f"{name}.log", "ab") as log:
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", "router.cli", *args],
                cwd=self.workdir,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def kill(self, name: str) -> None:
        """``kill -9``: no drain, no goodbye (for crash tests)."""
        proc = self.procs[name]
        proc.kill()
        proc.wait(timeout=10)
        del self.procs[name]

    def check(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                tail = (self.workdir / "logs" / f"{name}.log").read_text().strip().splitlines()[-3:]
                raise DemoFailed(f"{name} exited with code {proc.returncode}: {' | '.join(tail)}")

    def stop_one(self, name: str) -> int | None:
        """SIGTERM one process and wait for its drain."""
        proc = self.procs.pop(name)
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            return None

    def stop(self) -> dict[str, int | None]:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes: dict[str, int | None] = {}
        for name, proc in self.procs.items():
            try:
                codes[name] = proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[name] = None
        return codes


def _wait(console: Console, what: str, total: int, done: Callable[[], int], fleet: Fleet) -> float:
    start = time.monotonic()
    deadline = start + STEP_TIMEOUT
    if console.is_terminal:
        columns = (
            TextColumn("  {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=console, transient=True) as progress:
            task = progress.add_task(what, total=total)
            while (n := done()) < total:
                progress.update(task, completed=n)
                _tick(fleet, deadline, what)
    else:
        last = -1
        while (n := done()) < total:
            if n != last and (n - last) * 10 >= total:
                console.print(f"  {what}: {n}/{total}")
                last = n
            _tick(fleet, deadline, what)
    return time.monotonic() - start


def _tick(fleet: Fleet, deadline: float, what: str) -> None:
    fleet.check()
    if time.monotonic() > deadline:
        raise DemoFailed(f"timed out after {STEP_TIMEOUT:.0f}s waiting for: {what}")
    time.sleep(0.1)


def _router_status(url: str) -> dict[str, Any]:
    from router.broker.aio import connect
    from router.status import run_status

    return run_status(lambda: connect(BrokerConfig(url=url), "crmsync-demo"), 3.0)


def run_demo(directory: Path | None, records: int, keep_running: bool, console: Console) -> int:
    url = _broker_url(console)
    workdir = (directory or Path(tempfile.mkdtemp(prefix="crmsync-demo-"))).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    dbs = {}
    for name, crm in CRMS.items():
        for suffix in (".db", ".state.db"):
            for extra in ("", "-wal", "-shm"):
                (workdir / f"{name}{suffix}{extra}").unlink(missing_ok=True)
        dbs[name] = DemoDb(crm, workdir / f"{name}.db")
        (workdir / f"{name}.toml").write_text(
            crm.adapter_toml(workdir / f"{name}.db", workdir / f"{name}.state.db", url)
        )
    for extra in ("", "-wal", "-shm"):
        (workdir / f"router.db{extra}").unlink(missing_ok=True)
    (workdir / "router.toml").write_text(
        f'[broker]\nurl = "{url}"\n[state]\nurl = "sqlite:///{workdir / "router.db"}"\n'
        '[router]\nheartbeat_timeout = "5s"\n'
    )
    redacted = url.replace(":guest@", ":***@")
    console.print(f"[bold]crmsync demo[/] in {workdir} (broker {redacted})")

    fleet = Fleet(workdir, url)
    codes: dict[str, int | None] = {}
    try:
        fleet.start("router", "router", "--config", "router.toml")
        # Adapters only check the hub's exchanges, which the router declares: first it.
        _wait(
            console,
            "router up",
            1,
            lambda: int(bool(_router_status(url)["router"]["alive"])),
            fleet,
        )
        for name in CRMS:
            fleet.start(name, "adapter", "--config", f"{name}.toml")
        _wait(
            console,
            "adapters registered",
            len(CRMS),
            lambda: sum(a["alive"] for a in _router_status(url)["adapters"]),
            fleet,
        )
        console.print("[green]✓[/] router and adapters legacy, sales, mktg are up")

        dbs["legacy"].insert_contacts(records)
        took = _wait(
            console,
            "contacts reaching sales and mktg",
            2 * records,
            lambda: dbs["sales"].count() + dbs["mktg"].count(),
            fleet,
        )
        console.print(
            f"[green]✓[/] {records} contacts created in legacy reached sales and mktg "
            f"in {took:.1f}s"
        )

        target = "user1@example.com"
        dbs["sales"].update_by_email(target, first_name="Margaret")
        _wait(
            console,
            "an edit in sales reaching the others",
            3,
            lambda: sum(
                db.contacts().get(target, {}).get("first_name") == "Margaret" for db in dbs.values()
            ),
            fleet,
        )
        console.print(f"[green]✓[/] first_name of {target} edited in sales reached legacy and mktg")

        gone = "user2@example.com"
        dbs["legacy"].delete_by_email(gone)
        _wait(
            console,
            "a delete in legacy reaching the others",
            3,
            lambda: sum(gone not in db.contacts() for db in dbs.values()),
            fleet,
        )
        console.print(f"[green]✓[/] {gone} deleted in legacy: flagged in sales, removed in mktg")

        clash = "user3@example.com"
        dbs["legacy"].update_by_email(clash, last_name="Legacy-Edit")
        dbs["mktg"].update_by_email(clash, last_name="Mktg-Edit")
        _wait(
            console,
            "the concurrent edit converging",
            3,
            lambda: sum(
                db.contacts().get(clash, {}).get("last_name") == "Mktg-Edit" for db in dbs.values()
            ),
            fleet,
        )
        status = _router_status(url)
        conflicts = status["router"]["verdicts"].get("conflict", 0)
        console.print(
            f"[green]✓[/] {clash} edited in legacy and mktg at once: {conflicts} "
            "conflict(s) detected, the later edit (mktg) won in every CRM"
        )

        _summary(console, dbs, status, clash)
        if keep_running:
            console.print(
                f"\nRunning. Try: CRMSYNC_AMQP_URL={redacted} crmsync status  "
                f"(edit the CRMs in {workdir}/*.db). Ctrl-C stops."
            )
            with contextlib.suppress(KeyboardInterrupt):
                while True:
                    fleet.check()
                    time.sleep(1)
    finally:
        codes = fleet.stop()
        for db in dbs.values():
            db.close()
    unclean = {name: code for name, code in codes.items() if code != 0}
    if unclean:
        raise DemoFailed(f"processes did not stop cleanly: {unclean} (logs in {workdir}/logs)")
    console.print(f"stopped cleanly; logs in {workdir}/logs")
    return 0


def _summary(console: Console, dbs: dict[str, DemoDb], status: dict[str, Any], clash: str) -> None:
    table = Table(title="CRMs after the demo")
    table.add_column("CRM")
    table.add_column("table")
    table.add_column("contacts", justify="right")
    table.add_column(f"{clash} last_name")
    for name, db in dbs.items():
        contacts = db.contacts()
        table.add_row(name, db.crm.table, str(len(contacts)), str(contacts[clash]["last_name"]))
    console.print(table)
    verdicts = status["router"]["verdicts"]
    console.print("router verdicts: " + ", ".join(f"{k} {v}" for k, v in sorted(verdicts.items())))
    values = {name: db.contacts() for name, db in dbs.items()}
    mapped = {"email", "first_name", "last_name"}
    same = all(
        {k: v for k, v in values[name].get(email, {}).items() if k in mapped}
        == {k: v for k, v in contact.items() if k in mapped}
        for email, contact in values["legacy"].items()
        for name in ("sales", "mktg")
    )
    console.print(
        f"all three CRMs hold the same contacts: {'[green]yes[/]' if same else '[red]no[/]'}"
    )
    if not same:
        raise DemoFailed("the CRMs differ after the demo")


__all__ = ["run_demo"]
