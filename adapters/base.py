"""The adapter SDK's contract: what one CRM integration must implement.

An adapter implements only *read changes since a cursor*, *write a record* and
*delete a record* (plus *list ids* where deletes are hard, and optionally *list all*
for migration). The SDK (:mod:`adapters.engine`, :mod:`adapters.runtime`) does the
rest: links, clocks, echo suppression, the outbox, registration, heartbeats and the
sink queue.

Every method receives ``tx``, a SQLAlchemy connection inside a transaction on the
database that holds the links, so a write and its bookkeeping commit together. For the
SQL adapter that is the CRM's own database.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import Connection

from adapters.cleansing import DEFAULT, Cleansing
from adapters.cursor import Horizon
from router.events import Scalar


@dataclass(frozen=True)
class SourceRow:
    """One record as the CRM holds it."""

    entity: str
    source_record_id: str
    fields: dict[str, Any]  # canonical field name -> the CRM's raw value
    deleted: bool
    version: str | None  # opaque token: the row's updated_at exactly as stored
    position: Any  # where the row sits in capture order (a typed updated_at)

    @property
    def occurred_at(self) -> datetime:
        """When the change happened: the row's typed stamp (naive ones are UTC), else now."""
        if isinstance(self.position, datetime):
            stamp = self.position
            return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)
        return datetime.now(UTC)


class VersionMismatch(Exception):
    """A conditional write found the row changed since ``expected_version``."""

    def __init__(self, current: SourceRow | None) -> None:
        super().__init__("row changed since the version last seen")
        self.current = current


class Adapter(abc.ABC):
    """One CRM. Methods are synchronous; the runtime calls them from one worker thread."""

    name: str
    # How this CRM's rows are cleansed on capture and on read-back (``[canonical]``).
    cleansing: Cleansing = DEFAULT

    @abc.abstractmethod
    def entities(self) -> dict[str, list[str]]:
        """Entity -> canonical fields this CRM maps (sent at registration)."""

    @abc.abstractmethod
    def transaction(self) -> AbstractContextManager[Connection]:
        """A transaction on the database holding the links (and, for SQL, the data)."""

    def snapshot(self) -> AbstractContextManager[Connection]:
        """A transaction whose reads all see one consistent snapshot (a capture page: the
        delete journal and the rows). The default is :meth:`transaction`."""
        return self.transaction()

    @abc.abstractmethod
    def read_changes(
        self, tx: Connection, entity: str, since: Any, after: tuple[Any, str] | None, limit: int
    ) -> list[SourceRow]:
        """Rows changed at or after ``since`` (None: from the beginning), ordered by
        (position, id), strictly after the keyset position ``after``; at most ``limit``."""

    def horizon(self, tx: Connection, entity: str) -> Horizon:
        """The database's own clock (and, where it can tell, the start of its oldest open
        transaction) in the type of the positions: what bounds the capture cursor. The
        default knows no clock, so capture keeps no cursor and re-reads every poll."""
        return Horizon(None)

    @abc.abstractmethod
    def read_record(
        self, tx: Connection, entity: str, source_record_id: str, for_update: bool = False
    ) -> SourceRow | None:
        """The row as stored now, or None if it no longer exists. ``for_update``: lock it
        until ``tx`` ends where the database can (a conditional write's first step)."""

    @abc.abstractmethod
    def write_record(
        self,
        tx: Connection,
        entity: str,
        source_record_id: str | None,
        record_id: str,
        fields: dict[str, Scalar],
        expected_version: str | None,
    ) -> SourceRow:
        """Insert (``source_record_id`` None) or update the row, only if it is still at
        ``expected_version``; return it read back. Raises :class:`VersionMismatch`,
        :class:`~router.errors.TransientWriteError` or
        :class:`~router.errors.PermanentWriteError`."""

    def insert_many(
        self, tx: Connection, entity: str, items: Sequence[tuple[str, dict[str, Scalar]]]
    ) -> list[SourceRow]:
        """Insert one new row per ``(record_id, fields)``; the rows read back, in input
        order. One batch of a migration: override it with the CRM's bulk write. Raises
        what :meth:`write_record` raises; on an error nothing of the batch may remain
        once ``tx`` rolls back."""
        return [
            self.write_record(tx, entity, None, record_id, fields, None)
            for record_id, fields in items
        ]

    def read_records(
        self, tx: Connection, entity: str, source_record_ids: Sequence[str]
    ) -> dict[str, SourceRow]:
        """The rows of these ids that exist, by id (a page of records to hash and
        compare). Override it to read them in a few queries."""
        found: dict[str, SourceRow] = {}
        for sid in source_record_ids:
            row = self.read_record(tx, entity, sid)
            if row is not None:
                found[sid] = row
        return found

    @abc.abstractmethod
    def delete_record(
        self, tx: Connection, entity: str, source_record_id: str, expected_version: str | None
    ) -> SourceRow | None:
        """Delete (soft where configured: return the row read back; hard: return None)."""

    def soft_deletes(self, entity: str) -> bool:
        """True when a deleted record stays as a flagged row (False: rows are removed)."""
        return False

    def list_ids(self, tx: Connection, entity: str) -> set[str] | None:
        """Every id in the table, to find hard deletes; None where deletes are soft."""
        return None

    def existing_ids(
        self, tx: Connection, entity: str, source_record_ids: Sequence[str]
    ) -> set[str] | None:
        """Which of these ids have a row (the incremental hard-delete scan); None where
        deletes are soft. The default asks :meth:`list_ids`: override it to stay bounded."""
        every = self.list_ids(tx, entity)
        return None if every is None else every.intersection(source_record_ids)

    def journals_deletes(self, entity: str) -> bool:
        """True when the CRM's database journals ``entity``'s deleted ids
        (:mod:`adapters.journal`), so hard deletes need no id comparison."""
        return False

    def list_all(self, tx: Connection, entity: str) -> Iterator[SourceRow]:
        """Every row, for bulk migration."""
        raise NotImplementedError(f"{type(self).__name__} cannot list all records")

    def count_rows(self, tx: Connection, entity: str) -> int | None:
        """How many live (not deleted) rows ``entity`` has, where the CRM can tell cheaply:
        the total of a migration's progress bar. None: unknown (no bar, only a count)."""
        return None

    def read_page(
        self, tx: Connection, entity: str, after: str | None, limit: int
    ) -> list[SourceRow]:
        """Rows in source-id order strictly after ``after`` (None: from the first), at most
        ``limit``: a migration's keyset paging, constant memory however large the CRM."""
        raise NotImplementedError(f"{type(self).__name__} cannot page its records by id")

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release connections."""
