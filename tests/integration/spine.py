"""A crmsync installation in a temp folder: router + SQL adapters as real processes on
this test's own vhost, and the demo CRMs' databases to act as their users."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from router.broker.aio import connect
from router.config import BrokerConfig
from router.demo import Fleet
from router.demo.crms import CRMS, DemoDb
from router.status import run_status


def hub_status(url: str) -> dict[str, Any]:
    """``crmsync status`` of the hub on ``url``, as its JSON says it."""
    return run_status(lambda: connect(BrokerConfig(url=url), "crmsync-test"), 2.0)


def wait_for(
    what: str,
    predicate: Callable[[], bool],
    fleet: Fleet,
    timeout: float = 90.0,
    context: Callable[[], str] = lambda: "",
) -> None:
    """Until ``predicate()``; a process of ``fleet`` that died fails it at once. Most
    predicates ask ``crmsync status`` (a broker connection and a request to the router,
    ~10 ms of CPU): polled every 0.2 s, four waiting tests cost the box a tenth of a core,
    not a fifth, on the 2-core CI machine where the processes under test need it."""
    deadline = time.monotonic() + timeout
    while not predicate():
        fleet.check()
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; {context()}")
        time.sleep(0.2)


class Spine:
    def __init__(
        self,
        workdir: Path,
        url: str,
        retry: dict[str, tuple[str, ...]] | None = None,
        databases: dict[str, str] | None = None,
    ) -> None:
        """``databases``: a CRM's database URL where it is not its SQLite file in
        ``workdir`` (the same CRMs on PostgreSQL and MariaDB)."""
        self.workdir = workdir
        self.url = url
        self.fleet = Fleet(workdir, url)
        where = {name: (databases or {}).get(name, workdir / f"{name}.db") for name in CRMS}
        self.dbs = {name: DemoDb(crm, where[name]) for name, crm in CRMS.items()}
        for name, crm in CRMS.items():
            tiers = (retry or {}).get(name, ("1s", "5s"))
            (workdir / f"{name}.toml").write_text(
                crm.adapter_toml(where[name], workdir / f"{name}.state.db", url, retry=tiers)
            )
        (workdir / "router.toml").write_text(
            f'[broker]\nurl = "{url}"\n[state]\nurl = "sqlite:///{workdir / "router.db"}"\n'
            '[router]\nheartbeat_timeout = "3s"\n'
        )

    def set_conflicts(self, toml: str) -> None:
        """Add ``[conflicts.*]`` tables to the router's config (before start_router)."""
        with (self.workdir / "router.toml").open("a") as config:
            config.write("\n" + toml.strip() + "\n")

    def start_router(self) -> None:
        self.fleet.start("router", "router", "--config", "router.toml")

    def start_adapter(self, name: str) -> None:
        self.fleet.start(name, "adapter", "--config", f"{name}.toml")

    def start(self, adapters: tuple[str, ...] = ("legacy", "sales", "mktg")) -> None:
        """The router, then the adapters once it answers, and wait until they registered.
        (An adapter that asks before the router is up waits for its request to time out:
        seconds for nothing in every test.)"""
        self.start_router()
        self.wait("the router up", lambda: bool(self.status()["router"]["alive"]))
        for name in adapters:
            self.start_adapter(name)
        self.wait_registered(list(adapters))

    def status(self) -> dict[str, Any]:
        return hub_status(self.url)

    def wait(self, what: str, predicate: Callable[[], bool], timeout: float = 90.0) -> None:
        def counts() -> str:
            return f"counts { ({n: db.count() for n, db in self.dbs.items()}) }"

        wait_for(what, predicate, self.fleet, timeout, counts)

    def wait_registered(self, names: list[str]) -> None:
        def ok() -> bool:
            status = self.status()
            alive = {a["name"] for a in status["adapters"] if a["alive"]}
            return set(names) <= alive

        self.wait(f"adapters {names} registered", ok)

    def wait_quiet(self) -> dict[str, int]:
        """Until the router's verdict counters and every queue stop moving; returns verdicts."""
        last: dict[str, int] | None = None
        stable = 0
        deadline = time.monotonic() + 60
        while stable < 3:
            status = self.status()
            verdicts = dict(status["router"].get("verdicts", {}))
            if verdicts == last and status["drained"]:
                stable += 1
            else:
                stable = 0
            last = verdicts
            if time.monotonic() > deadline:
                raise AssertionError(f"system never went quiet: {status}")
            time.sleep(0.7)
        assert last is not None
        return last

    def stop(self) -> dict[str, int | None]:
        codes = self.fleet.stop()
        for db in self.dbs.values():
            db.close()
        return codes
