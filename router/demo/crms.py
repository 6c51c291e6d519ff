"""Three demo CRMs with different schemas, on SQLite: for ``crmsync demo`` and the tests.

``legacy`` has integer ids and a soft-delete flag, ``sales`` text ids and its own column
names, ``mktg`` does not map phone and deletes rows for real (hard deletes).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from router.database import make_engine


def database_url(where: Path | str) -> str:
    """A demo CRM's database: a SQLite file by default, or any SQLAlchemy URL (the tests
    place the same CRMs on PostgreSQL and MariaDB)."""
    return where if isinstance(where, str) else f"sqlite:///{where}"


@dataclass(frozen=True)
class DemoCrm:
    name: str
    table: str
    id: str
    int_ids: bool
    updated_at: str
    deleted: str | None
    fields: dict[str, str]  # canonical -> column

    def sa_table(self, meta: sa.MetaData) -> sa.Table:
        cols: list[sa.Column[Any]] = [
            sa.Column(self.id, sa.Integer, primary_key=True, autoincrement=True)
            if self.int_ids
            else sa.Column(self.id, sa.String(64), primary_key=True),
            *(sa.Column(col, sa.String(255)) for col in self.fields.values()),
            sa.Column(self.updated_at, sa.DateTime, nullable=False, index=True),
            sa.Column("notes", sa.String(255)),  # a column crmsync does not map
        ]
        if self.deleted:
            cols.append(sa.Column(self.deleted, sa.Boolean, nullable=False, default=False))
        # Like most CRMs, never hand out a deleted record's id again.
        return sa.Table(self.table, meta, *cols, sqlite_autoincrement=self.int_ids)

    def adapter_toml(
        self,
        db: Path | str,
        state_path: Path,
        amqp_url: str,
        poll: float = 0.2,
        retry: tuple[str, ...] = ("1s", "5s"),
    ) -> str:
        lines = [
            f'name = "{self.name}"',
            'kind = "sql"',
            "heartbeat_interval = 1.0",
            "[broker]",
            f'url = "{amqp_url}"',
            "[database]",
            f'url = "{database_url(db)}"',
            "[capture]",
            f"poll_interval = {poll}",
            "[state]",
            f'path = "{state_path}"',
            "[retry]",
            "delays = [" + ", ".join(f'"{d}"' for d in retry) + "]",
            "[entities.contact]",
            f'table = "{self.table}"',
            f'id = "{self.id}"',
            f'updated_at = "{self.updated_at}"',
        ]
        if self.deleted:
            lines.append(f'deleted = "{self.deleted}"')
        lines.append("[entities.contact.fields]")
        lines += [f'{canonical} = "{col}"' for canonical, col in self.fields.items()]
        return "\n".join(lines) + "\n"


CRMS: dict[str, DemoCrm] = {
    "legacy": DemoCrm(
        "legacy",
        "contacts",
        "id",
        True,
        "updated_at",
        "is_deleted",
        {"email": "email_addr", "first_name": "fname", "last_name": "lname", "phone": "phone"},
    ),
    "sales": DemoCrm(
        "sales",
        "people",
        "person_id",
        False,
        "modified",
        "deleted_flag",
        {"email": "mail", "first_name": "first", "last_name": "last", "phone": "mobile"},
    ),
    "mktg": DemoCrm(
        "mktg",
        "leads",
        "lead_id",
        True,
        "updated",
        None,
        {"email": "email", "first_name": "given_name", "last_name": "family_name"},
    ),
}

FIRST = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Radia", "Leslie"]
LAST = [
    "Lovelace",
    "Hopper",
    "Turing",
    "Dijkstra",
    "Liskov",
    "Knuth",
    "Allen",
    "Thompson",
    "Perlman",
    "Lamport",
]


class DemoDb:
    """A demo CRM's database, with the edits a user of that CRM would make."""

    def __init__(self, crm: DemoCrm, where: Path | str) -> None:
        self.crm = crm
        self.url = database_url(where)
        self.engine = make_engine(self.url)
        meta = sa.MetaData()
        self.table = crm.sa_table(meta)
        meta.create_all(self.engine)
        self.c = self.table.c

    def _now(self) -> datetime:
        return datetime.now(UTC).replace(tzinfo=None)

    def insert_contacts(self, count: int, start: int = 0, seed: int = 7) -> list[str]:
        rng = random.Random(seed + start)
        f = self.crm.fields
        rows = []
        for i in range(start, start + count):
            row: dict[str, Any] = {
                f["email"]: f"user{i}@example.com",
                f["first_name"]: rng.choice(FIRST),
                f["last_name"]: rng.choice(LAST),
                self.crm.updated_at: self._now(),
            }
            if "phone" in f:
                row[f["phone"]] = f"+1-555-{i:07d}"
            if not self.crm.int_ids:
                row[self.crm.id] = f"{self.crm.name[0].upper()}-{i:06d}"
            if self.crm.deleted:
                row[self.crm.deleted] = False
            rows.append(row)
        with self.engine.begin() as conn:
            # One row at a time, like users do, so ids and timestamps interleave naturally.
            for chunk in range(0, len(rows), 200):
                conn.execute(self.table.insert(), rows[chunk : chunk + 200])
        return [r[self.crm.fields["email"]] for r in rows]

    def update_by_email(self, match: str, /, **canonical: Any) -> None:
        """Edit the contact whose email is ``match`` (the email itself may change too)."""
        email = match
        values = {self.crm.fields[k]: v for k, v in canonical.items()}
        values[self.crm.updated_at] = self._now()
        with self.engine.begin() as conn:
            conn.execute(
                self.table.update().where(self.c[self.crm.fields["email"]] == email).values(values)
            )

    def delete_by_email(self, email: str) -> None:
        where = self.c[self.crm.fields["email"]] == email
        with self.engine.begin() as conn:
            if self.crm.deleted:
                conn.execute(
                    self.table.update()
                    .where(where)
                    .values({self.crm.deleted: True, self.crm.updated_at: self._now()})
                )
            else:
                conn.execute(self.table.delete().where(where))

    def contacts(self, include_deleted: bool = False) -> dict[str, dict[str, Any]]:
        """email -> canonical fields of the live rows."""
        query = sa.select(self.table)
        if self.crm.deleted and not include_deleted:
            query = query.where(self.c[self.crm.deleted].is_(False))
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        by_email = {}
        for r in rows:
            canonical = {k: r[col] for k, col in self.crm.fields.items()}
            by_email[str(canonical["email"])] = canonical
        return by_email

    def count(self) -> int:
        return len(self.contacts())

    def close(self) -> None:
        self.engine.dispose()


def prepare(directory: Path, records: int) -> list[str]:
    """The demo CRMs' tables in ``directory`` where missing (legacy seeded with
    ``records`` contacts when its table is new); existing ones are left as they are.
    Returns the names whose tables it made. By table, not by file: an adapter that
    started first has already made an empty SQLite file by opening it."""
    directory.mkdir(parents=True, exist_ok=True)
    made = []
    for name, crm in CRMS.items():
        engine = make_engine(database_url(directory / f"{name}.db"))
        try:
            exists = sa.inspect(engine).has_table(crm.table)
        finally:
            engine.dispose()
        if exists:
            continue
        db = DemoDb(crm, directory / f"{name}.db")
        if name == "legacy" and records:
            db.insert_contacts(records)
        db.close()
        made.append(name)
    return made
