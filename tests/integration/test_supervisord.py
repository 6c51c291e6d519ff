"""config/supervisord.conf as shipped (issue 13, item 7): `supervisord -c` on a copy of
the checkout's config/ brings up a syncing system from nothing (the demo CRMs' databases
included, empty), and `supervisorctl stop all` drains every process to exit 0 with nothing
lost: the edits made just before the stop are all there once it starts again.

The copy lives in this test's temp dir (its `%(here)s/..` is the temp dir, with the
checkout's .venv linked in), the broker URL is this test's vhost, and the router's
metrics port is a free one instead of the demo's 9464: nothing else differs."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from router.demo.crms import CRMS, DemoDb
from tests.broker import queue_depth
from tests.integration.spine import hub_status
from tests.rabbit_node import alive, free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / ".venv" / "bin"


class Supervised:
    def __init__(self, home: Path, env: dict[str, str]) -> None:
        self.home, self.env = home, env
        self.conf = home / "config" / "supervisord.conf"

    def ctl(self, *args: str) -> str:
        done = subprocess.run(
            [str(BIN / "supervisorctl"), "-c", str(self.conf), *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=120,
        )
        return done.stdout

    def db(self, name: str) -> DemoDb:
        return DemoDb(CRMS[name], self.home / "demo-data" / f"{name}.db")

    def count(self, name: str) -> int:
        db = self.db(name)
        try:
            return db.count()
        finally:
            db.close()

    def wait(self, what: str, predicate: Callable[[], bool], timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while True:
            try:
                if predicate():
                    return
            except Exception as e:  # a database not created yet, a router not up: again
                last = e
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out waiting for {what} (last error: {last!r}); {self.ctl('status')}"
                )
            time.sleep(0.3)


@pytest.fixture
def supervised(amqp: str, tmp_path: Path) -> Iterator[Supervised]:
    shutil.copytree(ROOT / "config", tmp_path / "config")
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    (tmp_path / "state" / "logs").mkdir(parents=True)
    router_toml = tmp_path / "config" / "router.demo.toml"
    router_toml.write_text(
        re.sub(r"(?m)^port = 9464$", f"port = {free_port()}", router_toml.read_text())
    )
    env = {**os.environ, "CRMSYNC_AMQP_URL": amqp}
    s = Supervised(tmp_path, env)
    subprocess.run([str(BIN / "supervisord"), "-c", str(s.conf)], env=env, check=True, timeout=30)
    pid = int((tmp_path / "state" / "supervisord.pid").read_text())
    try:
        yield s
    finally:
        s.ctl("shutdown")
        deadline = time.monotonic() + 60
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if alive(pid):  # only the supervisord this test started, by its pid
            os.kill(pid, 9)


def test_supervisord_brings_up_a_syncing_system_and_stop_all_drains_without_loss(
    supervised: Supervised, vhost: str
) -> None:
    s = supervised
    s.wait(
        "router and adapters up",
        lambda: {a["name"] for a in hub_status(s.env["CRMSYNC_AMQP_URL"])["adapters"]} == set(CRMS),
        timeout=150,
    )
    legacy = s.db("legacy")
    try:
        legacy.insert_contacts(200)
    finally:
        legacy.close()
    s.wait(
        "the first contacts in sales and mktg",
        lambda: s.count("sales") == 200 and s.count("mktg") == 200,
        timeout=150,
    )
    legacy = s.db("legacy")
    try:
        legacy.insert_contacts(300, start=200)
        legacy.update_by_email("user7@example.com", first_name="JustBeforeStop")
    finally:
        legacy.close()
    time.sleep(0.5)  # under way, not finished: stop catches it in mid-stream
    s.ctl("stop", "all")
    status = s.ctl("status")
    assert status.count("STOPPED") == 4, status  # router, three adapters
    log = (s.home / "state" / "logs" / "supervisord.log").read_text()
    for program in ("crmsync-router", *(f"crmsync-adapter-{n}" for n in CRMS)):
        assert f"stopped: {program} (exit status 0)" in log, log[-2000:]

    s.ctl("start", "all")
    s.wait(
        "everything once the system is back",
        lambda: s.count("sales") == 500 and s.count("mktg") == 500,
        timeout=150,
    )
    for name in ("sales", "mktg"):
        db = s.db(name)
        try:
            assert db.contacts()["user7@example.com"]["first_name"] == "JustBeforeStop"
            with db.engine.connect() as conn:
                assert len(conn.execute(db.table.select()).all()) == 500, f"{name}: duplicates"
        finally:
            db.close()
        assert queue_depth(vhost, f"crmsync.dlq.{name}") == 0
