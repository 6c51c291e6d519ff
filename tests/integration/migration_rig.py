"""Two CRMs with a plain contacts table, their adapters and a router as real processes on
a test's own vhost: the set-up every migration and reconcile test starts from.

The CRMs are SQLite files by default; ``target_url`` puts the target on a server
database (the test's own PostgreSQL or MariaDB database). Rows are written the way a
CRM's application would: the writer stamps ``updated_at``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from router.demo import Fleet
from tests.integration.spine import hub_status, wait_for

ROOT = Path(__file__).resolve().parents[2]


def contacts_table(meta: sa.MetaData, int_ids: bool = False) -> sa.Table:
    key = (
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True)
        if int_ids
        else sa.Column("id", sa.String(64), primary_key=True)
    )
    return sa.Table(
        "contacts",
        meta,
        key,
        sa.Column("email", sa.String(255)),
        sa.Column("first_name", sa.String(100)),
        sa.Column("last_name", sa.String(100)),
        sa.Column("updated_at", sa.DateTime(timezone=False), nullable=False),
    )


class Crm:
    """One CRM database, with a user's view of it."""

    def __init__(self, url: str, int_ids: bool = False) -> None:
        self.url = url
        self.engine = sa.create_engine(url)
        meta = sa.MetaData()
        self.table = contacts_table(meta, int_ids)
        meta.create_all(self.engine)

    def insert(self, rows: Iterable[dict[str, Any]]) -> None:
        now = datetime.now(UTC).replace(tzinfo=None)
        batch = [{"updated_at": now, **r} for r in rows]
        with self.engine.begin() as conn:
            for start in range(0, len(batch), 5000):
                conn.execute(self.table.insert(), batch[start : start + 5000])

    def update(self, row_id: Any, touch: bool = True, **values: Any) -> None:
        if touch:
            values["updated_at"] = datetime.now(UTC).replace(tzinfo=None)
        with self.engine.begin() as conn:
            conn.execute(self.table.update().where(self.table.c.id == row_id).values(**values))

    def delete(self, row_id: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(self.table.delete().where(self.table.c.id == row_id))

    def rows(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(sa.select(self.table))]

    def count(self) -> int:
        with self.engine.connect() as conn:
            return int(
                conn.execute(sa.select(sa.func.count()).select_from(self.table)).scalar_one()
            )

    def close(self) -> None:
        self.engine.dispose()


def people(n: int, start: int = 0, prefix: str = "p") -> list[dict[str, Any]]:
    return [
        {
            "id": f"{prefix}{i:07d}",
            "email": f"person{i}@example.com",
            "first_name": f"First{i}",
            "last_name": f"Last{i}",
        }
        for i in range(start, start + n)
    ]


class Rig:
    def __init__(
        self,
        workdir: Path,
        url: str,
        target_url: str | None = None,
        match: list[str] | None = None,
        target_initial: bool = True,
        router_extra: str = "",
    ) -> None:
        self.workdir = workdir
        self.url = url
        self.fleet = Fleet(workdir, url)
        self.source = Crm(f"sqlite:///{workdir / 'old.db'}")
        self.target = Crm(target_url or f"sqlite:///{workdir / 'new.db'}")
        self._adapter_toml("old", self.source.url)
        self._adapter_toml("new", self.target.url)
        router = (
            f'[broker]\nurl = "{url}"\n[state]\nurl = "sqlite:///{workdir / "router.db"}"\n'
            '[router]\nheartbeat_timeout = "5s"\n'
        )
        if match:
            router += f"[entities.contact]\nmatch = {json.dumps(match)}\n"
        (workdir / "router.toml").write_text(router + router_extra)

    def _adapter_toml(self, name: str, db_url: str) -> None:
        (self.workdir / f"{name}.toml").write_text(
            f'name = "{name}"\nheartbeat_interval = 1.0\n[broker]\nurl = "{self.url}"\n'
            f'[database]\nurl = "{db_url}"\n'
            f'[state]\npath = "{self.workdir / (name + ".state.db")}"\n'
            '[capture]\npoll_interval = 0.2\noverlap = "1s"\n'
            '[retry]\ndelays = ["1s", "2s"]\n'
            '[entities.contact]\ntable = "contacts"\n'
            "[entities.contact.fields]\n"
            'email = "email"\nfirst_name = "first_name"\nlast_name = "last_name"\n'
        )

    # -- processes ------------------------------------------------------------------------
    def start_router(self) -> None:
        self.fleet.start("router", "router", "--config", "router.toml")
        self.wait("the router up", lambda: bool(self.status()["router"]["alive"]))

    def start_adapter(self, name: str) -> None:
        self.fleet.start(name, "adapter", "--config", f"{name}.toml")
        self.wait(f"adapter {name} alive", lambda: self._alive(name))

    def start(self) -> None:
        self.start_router()
        self.start_adapter("old")
        self.start_adapter("new")

    def _alive(self, name: str) -> bool:
        return any(a["name"] == name and a["alive"] for a in self.status()["adapters"])

    def status(self) -> dict[str, Any]:
        return hub_status(self.url)

    def wait(self, what: str, predicate: Callable[[], bool], timeout: float = 90.0) -> None:
        wait_for(what, predicate, self.fleet, timeout)

    def stop(self) -> None:
        self.fleet.stop()
        self.source.close()
        self.target.close()

    # -- commands -------------------------------------------------------------------------
    def command(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "router.cli", *args],
            cwd=self.workdir,
            env={**os.environ, "CRMSYNC_AMQP_URL": self.url, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def spawn(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "router.cli", *args],
            cwd=self.workdir,
            env={**os.environ, "CRMSYNC_AMQP_URL": self.url, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def migrate(self, *extra: str) -> tuple[int, dict[str, Any], str]:
        """``crmsync migrate --from old --to new --json``: exit code, report, stderr."""
        done = self.command("migrate", "--from", "old", "--to", "new", "--json", *extra)
        report = json.loads(done.stdout) if done.stdout.strip() else {}
        return done.returncode, report, done.stderr


def new_id() -> str:
    return str(uuid.uuid4())
