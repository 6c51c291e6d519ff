"""A crmsync installation for the HubSpot end-to-end tests: the router and two adapters
as processes on this test's own vhost, a SQLite CRM (the demo's ``legacy``) and HubSpot
(the fake, run by the test process), the HubSpot adapter from the shipped
config/adapters/hubspot.toml with only URLs, paths and intervals replaced."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from router.demo import Fleet
from router.demo.crms import CRMS, DemoDb
from tests.fakes.hubspot import FakeHubSpot, hubspot_server
from tests.fakes.hubspot_store import Contact
from tests.integration.spine import hub_status, wait_for

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "pat-na1-e2e-secret-token"
NOBODY = Contact("", {}, 0, 0)  # what in_hubspot(...) or NOBODY reads as: no properties


def deploy_hubspot(workdir: Path, fake: FakeHubSpot) -> None:
    token = workdir / "hubspot.token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    text = (ROOT / "config" / "adapters" / "hubspot.toml").read_text()
    replace = {
        r'(?m)^# base_url = ".*$': f'base_url = "{fake.base_url}"',
        r"(?m)^token_file = .*$": f'token_file = "{token}"',
        r"(?m)^search_lag = .*$": 'search_lag = "1s"',
        r"(?m)^poll_interval = .*$": "poll_interval = 0.2",
        r"(?m)^hard_delete_scan_every = .*$": "hard_delete_scan_every = 1",
        r'(?m)^path = ".*"$': f'path = "{workdir / "hubspot.state.db"}"',
        r"(?m)^delays = .*$": 'delays = ["1s", "2s"]',
    }
    for pattern, value in replace.items():
        text, n = re.subn(pattern, value, text, count=1)
        assert n == 1, pattern
    text = text.replace('kind = "hubspot"\n', 'kind = "hubspot"\nheartbeat_interval = 1.0\n')
    (workdir / "hubspot.toml").write_text(text)


class Rig:
    def __init__(self, workdir: Path, url: str, fake: FakeHubSpot) -> None:
        self.url, self.fake = url, fake
        self.fleet = Fleet(workdir, url)
        crm = CRMS["legacy"]
        self.legacy = DemoDb(crm, workdir / "legacy.db")
        (workdir / "legacy.toml").write_text(
            crm.adapter_toml(workdir / "legacy.db", workdir / "legacy.state.db", url)
        )
        deploy_hubspot(workdir, fake)
        (workdir / "router.toml").write_text(
            f'[broker]\nurl = "{url}"\n[state]\nurl = "sqlite:///{workdir / "router.db"}"\n'
            '[router]\nheartbeat_timeout = "5s"\n'
        )

    def status(self) -> dict[str, Any]:
        return hub_status(self.url)

    def wait(self, what: str, predicate: Any, timeout: float = 60.0) -> None:
        wait_for(what, predicate, self.fleet, timeout)

    def start(self, adapters: tuple[str, ...] = ("legacy", "hubspot")) -> None:
        if "router" not in self.fleet.procs:
            self.fleet.start("router", "router", "--config", "router.toml")
            self.wait("the router", lambda: bool(self.status()["router"]["alive"]))
        for name in adapters:
            self.fleet.start(name, "adapter", "--config", f"{name}.toml")
        self.wait(
            f"adapters {adapters} registered",
            lambda: set(adapters) <= {a["name"] for a in self.status()["adapters"] if a["alive"]},
        )

    def migrate(self, source: str, target: str) -> dict[str, Any]:
        command = ["migrate", "--from", source, "--to", target, "--json"]
        done = subprocess.run(
            [sys.executable, "-m", "router.cli", *command],
            cwd=self.fleet.workdir,
            capture_output=True,
            text=True,
            timeout=120,
            env={**self.fleet.env, "PYTHONPATH": str(ROOT)},
        )
        assert done.returncode == 0, done.stderr
        report: dict[str, Any] = json.loads(done.stdout)
        return report

    def in_hubspot(self, email: str) -> Contact | None:
        with self.fake.lock:
            c = self.fake.store.by_email(email)
            return None if c is None else c.copy()

    def verdicts(self) -> int:
        return sum(self.status()["router"]["verdicts"].values())


@contextmanager
def running(amqp: str, tmp_path: Path) -> Iterator[Rig]:
    """A Rig whose processes must all stop cleanly (exit 0) at the end."""
    with hubspot_server(token=TOKEN, lag=0.5) as fake:
        r = Rig(tmp_path, amqp, fake)
        try:
            yield r
        finally:
            codes = r.fleet.stop()
            r.legacy.close()
        assert all(code == 0 for code in codes.values()), codes


def settled(rig: Rig, quiet: float = 2.0) -> tuple[int, int]:
    """(router verdicts, HubSpot write requests) once neither moved for ``quiet`` s:
    several polls of both adapters, where an echo or a ping-pong would show."""

    def now() -> tuple[int, int]:
        writes = sum(n for k, n in rig.fake.requests.items() if "/batch/" in k and "read" not in k)
        return rig.verdicts(), writes

    last, since = now(), time.monotonic()
    while time.monotonic() - since < quiet:
        time.sleep(0.3)
        seen = now()
        if seen != last:
            last, since = seen, time.monotonic()
    return last
