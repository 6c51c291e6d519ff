"""The conformance checks fail an adapter that breaks the contract, and only the checks
that contract covers (each broken adapter is a FileAdapter with one fault)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Connection

from adapters.base import SourceRow
from adapters.engine import SyncEngine
from adapters.file import FileAdapter
from adapters.kit import CHECKS, CheckFailed, Subject, checks
from adapters.kit.file_driver import FileDriver
from adapters.kit.subject import private_state
from router.adapter_config import AdapterConfig
from router.events import Scalar


class BlindCapture(FileAdapter):
    def read_changes(
        self, tx: Connection, entity: str, since: Any, after: tuple[Any, str] | None, limit: int
    ) -> list[SourceRow]:
        return []


class KeepsDeleted(FileAdapter):
    def existing_ids(
        self, tx: Connection, entity: str, source_record_ids: Sequence[str]
    ) -> set[str] | None:
        return set(source_record_ids)


class LyingReadBack(FileAdapter):
    def write_record(
        self,
        tx: Connection,
        entity: str,
        source_record_id: str | None,
        record_id: str,
        fields: dict[str, Scalar],
        expected_version: str | None,
    ) -> SourceRow:
        row = super().write_record(tx, entity, source_record_id, record_id, fields, None)
        return dataclasses.replace(row, fields={**row.fields, "first_name": "Not Stored"})


class IgnoresDeletes(FileAdapter):
    def delete_record(
        self, tx: Connection, entity: str, source_record_id: str, expected_version: str | None
    ) -> SourceRow | None:
        return None


class MiscountsPages(FileAdapter):
    def count_rows(self, tx: Connection, entity: str) -> int | None:
        counted = super().count_rows(tx, entity)
        return None if counted is None else counted + 1


def subject(tmp_path: Path, kind: type[FileAdapter], rate: str | None = None) -> Subject:
    folder = tmp_path / "export"
    folder.mkdir()
    config = AdapterConfig.model_validate(
        {
            "name": "export",
            "kind": "file",
            "write": {"rate": rate},
            "entities": {
                "contact": {
                    "path": str(folder / "contacts.csv"),
                    "fields": {"email": "email", "first_name": "first", "last_name": "last"},
                    "transforms": {"score": {"type": "integer"}},
                }
            },
        }
    )
    config = private_state(config, tmp_path / "kit")
    adapter = kind(config)
    engine = SyncEngine(adapter, config.name, overlap=2.0)
    # A change this fake CRM's capture misses would never show: do not wait for it long.
    return Subject(config, adapter, engine, FileDriver(config, adapter), "contact", patience=0.3)


def failing(s: Subject) -> dict[str, str]:
    failed = {}
    try:
        for name, check in CHECKS.items():
            try:
                check(s)
            except CheckFailed as e:
                failed[name] = str(e)
    finally:
        s.close()
    return failed


def test_a_conforming_adapter_passes_every_check(tmp_path: Path) -> None:
    assert failing(subject(tmp_path, FileAdapter)) == {}


@pytest.mark.parametrize(
    ("kind", "caught", "reason"),
    [
        (BlindCapture, {"capture_insert", "capture_update", "capture_delete"}, "0 events"),
        (KeepsDeleted, {"capture_delete"}, "0 events"),
        # The next write then finds "someone else's" edit and yields to it.
        (LyingReadBack, {"honest_read_back", "echo_suppressed", "idempotent_writes"}, "differs"),
        (IgnoresDeletes, {"idempotent_writes"}, "left the record live"),
        (MiscountsPages, {"migration_paging"}, "count_rows says"),
    ],
)
def test_a_broken_adapter_fails_the_checks_of_what_it_breaks(
    tmp_path: Path, kind: type[FileAdapter], caught: set[str], reason: str
) -> None:
    failed = failing(subject(tmp_path, kind))
    assert set(failed) == caught, failed
    assert any(reason in text for text in failed.values()), failed


class _Unlimited:
    def __init__(self, rate: float | None) -> None:
        pass

    async def acquire(self, n: int) -> None:
        pass


def test_the_rate_check_measures_the_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = subject(tmp_path, FileAdapter, rate="5/s")
    try:
        held = checks.rate_limit(s)
        assert "cap 5/s" in held
        monkeypatch.setattr(checks, "WriteLimiter", _Unlimited)
        with pytest.raises(CheckFailed, match=r"writes/s measured, above the cap of 5/s"):
            checks.rate_limit(s)
    finally:
        s.close()
