"""The file adapter (adapters/file.py) on real files: source, target, crash safety."""

from __future__ import annotations

import json
import logging
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from adapters import file_codec, file_index
from adapters.base import SourceRow
from adapters.engine import SyncEngine
from adapters.file import FileAdapter
from adapters.file_store import FileStore
from router.adapter_config import AdapterConfig
from router.errors import ConfigError, TransientWriteError
from router.events import ChangeEvent, Scalar, decode

FIELDS = {"email": "email", "first_name": "first", "last_name": "last"}


def config(tmp_path: Path, fmt: str = "csv", **entity: Any) -> AdapterConfig:
    return AdapterConfig.model_validate(
        {
            "name": "export",
            "kind": "file",
            "state": {"path": str(tmp_path / "state" / "export.state.db")},
            "entities": {
                "contact": {"path": str(tmp_path / f"contacts.{fmt}"), "fields": FIELDS, **entity}
            },
        }
    )


def captured(engine: SyncEngine, cursors: dict[str, Any]) -> list[ChangeEvent]:
    cursors.update(engine.capture(cursors).positions)
    engine.scan_hard_deletes()
    owed = engine.pending()
    engine.mark_published(owed)
    return [decode(e.body) for e in owed]


def records(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line]


# -- as a source ---------------------------------------------------------------------------


def test_bad_records_are_reported_by_line_and_field_never_value(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "contacts.csv"
    path.write_text(
        "id,email,first,last\n"
        '1,ada@example.org,"Ada\nMay",Lovelace\n'  # one record over two lines
        "2,only-two\n"  # line 4
        "3,secret-not-an-email,Bo,Bar\n"  # line 5
        "1,dup@example.org,Dup,Licate\n"  # line 6
        ",noid@example.org,No,Id\n"  # line 7
        "4,cy@example.org,Cy,Young\n"
    )
    engine = SyncEngine(FileAdapter(config(tmp_path)), "export", overlap=2.0)
    with caplog.at_level(logging.WARNING):
        events = captured(engine, {})
    assert sorted(e.source_record_id for e in events) == ["1", "4"]
    assert {e.source_record_id: e.fields["first_name"] for e in events}["1"] == "Ada\nMay"
    reports = [r.__dict__["kv"] for r in caplog.records]
    unreadable = {r["line"]: r["reason"] for r in reports if "line" in r}
    assert set(unreadable) == {4, 6, 7}
    assert "2 values, the header has 4" in unreadable[4]
    skipped = [r["reason"] for r in reports if r.get("source_record_id") == "3"]
    assert skipped == ["line 5: email: not an email address"]
    assert "secret" not in caplog.text and "dup@example.org" not in caplog.text


def test_a_value_a_transform_refuses_is_reported_by_line_and_field(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "contacts.csv").write_text(
        "id,email,first,last,score\n1,a@example.org,A,B,7\n2,b@example.org,C,D,seven\n"
    )
    adapter = FileAdapter(config(tmp_path, transforms={"score": {"type": "integer"}}))
    engine = SyncEngine(adapter, "export", overlap=2.0)
    with caplog.at_level(logging.WARNING):
        events = captured(engine, {})
    assert [(e.source_record_id, e.fields["score"]) for e in events] == [("1", 7)]
    reasons = [r.__dict__["kv"]["reason"] for r in caplog.records]
    assert reasons == ["line 3: score: not an integer"]
    assert "seven" not in caplog.text


def test_a_changed_file_is_read_again_only_where_it_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "contacts.jsonl"
    rows = [{"id": i, "email": f"p{i}@example.org", "first": "P", "last": str(i)} for i in range(5)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    adapter = FileAdapter(config(tmp_path, "jsonl"))
    read: list[str] = []
    real = adapter.read_changes

    def reads(*args: Any) -> list[SourceRow]:
        found = real(*args)
        read.extend(r.source_record_id for r in found)
        return found

    monkeypatch.setattr(adapter, "read_changes", reads)
    engine = SyncEngine(adapter, "export", overlap=2.0)
    cursors: dict[str, Any] = {}
    assert len(captured(engine, cursors)) == 5
    read.clear()
    for _ in range(3):  # an unchanged file: polls read no record at all
        assert captured(engine, cursors) == []
    assert read == []
    rows[1]["last"] = "changed"
    del rows[3]
    rows.append({"id": 9, "email": "new@example.org", "first": "N", "last": "ew"})
    tmp = tmp_path / "replacement"
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.replace(path)  # as an export job replaces its output
    events = {e.source_record_id: e for e in captured(engine, cursors)}
    assert set(events) == {"1", "3", "9"}
    assert (events["1"].op, events["1"].fields["last_name"]) == ("upsert", "changed")
    assert events["3"].op == "delete" and events["9"].op == "upsert"
    assert sorted(set(read)) == ["1", "9"]  # the unchanged records were not read again


def test_pages_seek_into_the_index_instead_of_reading_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "contacts.csv"
    with path.open("w") as f:
        f.write("id,email,first,last\n")
        for i in range(2000):
            f.write(f"{i:05d},p{i}@example.org,P,{i}\n")
    adapter = FileAdapter(config(tmp_path))
    with adapter.transaction() as tx:
        assert adapter.count_rows(tx, "contact") == 2000
    scans: list[int] = []
    real = file_codec.frames

    def counted(*args: Any, **kwargs: Any) -> Any:
        scans.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(file_codec, "frames", counted)
    seen, after = [], None
    with adapter.transaction() as tx:
        while page := adapter.read_page(tx, "contact", after, 300):
            seen += [r.source_record_id for r in page]
            after = page[-1].source_record_id
    assert seen == [f"{i:05d}" for i in range(2000)]
    assert scans == []  # every page sought its records; the file was never read through


def test_indexing_a_big_file_takes_constant_memory(tmp_path: Path) -> None:
    path = tmp_path / "contacts.jsonl"
    with path.open("w") as f:
        for i in range(30_000):
            f.write(json.dumps({"id": i, "email": f"p{i}@example.org", "first": "P" * 40}) + "\n")
    adapter = FileAdapter(config(tmp_path, "jsonl"))
    tracemalloc.start()
    with adapter.transaction() as tx:
        assert adapter.count_rows(tx, "contact") == 30_000
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert path.stat().st_size > 2_000_000
    assert peak < 1_500_000, peak  # the file is ~2.4 MB; one batch of records is held


def test_a_vanished_file_is_an_outage_not_a_mass_delete(tmp_path: Path) -> None:
    path = tmp_path / "contacts.csv"
    path.write_text("id,email,first,last\n1,a@example.org,A,B\n")
    engine = SyncEngine(FileAdapter(config(tmp_path)), "export", overlap=2.0)
    cursors: dict[str, Any] = {}
    assert len(captured(engine, cursors)) == 1
    path.unlink()
    with pytest.raises(TransientWriteError, match=r"entities\.contact\.path: the file is missing"):
        engine.capture(cursors)
    with pytest.raises(TransientWriteError):
        engine.scan_hard_deletes()
    path.mkdir()  # something that cannot be read as the file (as a permission would)
    with pytest.raises(TransientWriteError, match=r"cannot read the file \(IsADirectoryError\)"):
        engine.capture(cursors)


def test_config_errors_name_their_key(tmp_path: Path) -> None:
    bad = config(tmp_path, fields={"email": "id"})
    with pytest.raises(ConfigError, match=r"entities\.contact\.fields: column 'id' is the id"):
        FileAdapter(bad)
    both = config(tmp_path).model_copy(deep=True)
    both.entities["company"] = both.entities["contact"]
    with pytest.raises(
        ConfigError, match=r"entities\.company\.path: the file of entities\.contact"
    ):
        FileAdapter(both)


# -- as a target ---------------------------------------------------------------------------


def _write(adapter: FileAdapter, record_id: str, **fields: Any) -> None:
    with adapter.transaction() as tx:
        adapter.write_record(tx, "contact", None, record_id, fields, None)


def test_writes_keep_unmapped_columns_and_read_back_typed(tmp_path: Path) -> None:
    path = tmp_path / "contacts.csv"
    path.write_text("id,email,first,last,score,notes\n7,a@example.org,A,B,3,keep me\n")
    adapter = FileAdapter(config(tmp_path, transforms={"score": {"type": "integer"}}))
    with adapter.transaction() as tx:
        row = adapter.read_record(tx, "contact", "7")
        assert row is not None and row.fields["score"] == 3
        back = adapter.write_record(
            tx, "contact", "7", "r", {"score": 4, "first_name": "Z"}, row.version
        )
    assert back.fields == {
        "email": "a@example.org",
        "first_name": "Z",
        "last_name": "B",
        "score": 4,
    }
    assert records(path)[1] == "7,a@example.org,Z,B,4,keep me"
    with adapter.transaction() as tx:
        again = adapter.read_record(tx, "contact", "7")
    assert again is not None and (again.fields, again.version) == (back.fields, back.version)


def test_a_new_export_is_appended_with_its_header(tmp_path: Path) -> None:
    adapter = FileAdapter(config(tmp_path, deleted="gone"))
    for i in range(3):
        _write(adapter, f"r{i}", email=f"p{i}@example.org", first_name="P", last_name=str(i))
    with adapter.transaction() as tx:
        assert adapter.delete_record(tx, "contact", "r1", None) is not None  # soft: flagged
    assert records(tmp_path / "contacts.csv") == [
        "id,email,first,last,gone",
        "r0,p0@example.org,P,0,false",
        "r1,p1@example.org,P,1,true",
        "r2,p2@example.org,P,2,false",
    ]
    with adapter.transaction() as tx:
        assert adapter.count_rows(tx, "contact") == 2


def _pending(adapter: FileAdapter) -> int:
    with adapter.engine.connect() as conn:
        query = sa.select(sa.func.count()).select_from(file_index.pending)
        return int(conn.execute(query).scalar_one())


def test_a_crash_before_the_file_write_is_finished_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = config(tmp_path, "jsonl")
    adapter = FileAdapter(cfg)
    monkeypatch.setattr(FileAdapter, "_flush", lambda self: None)  # dies right after commit
    _write(adapter, "r1", email="a@example.org")
    with adapter.transaction() as tx:  # read-back sees the staged write meanwhile
        row = adapter.read_record(tx, "contact", "r1")
        assert row is not None and row.fields["email"] == "a@example.org"
    assert not (tmp_path / "contacts.jsonl").exists() and _pending(adapter) == 1
    monkeypatch.undo()
    FileAdapter(cfg)  # the restart
    assert records(tmp_path / "contacts.jsonl") == ['{"id":"r1","email":"a@example.org"}']
    assert _pending(adapter) == 0


def test_a_torn_append_is_cut_back_and_done_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = config(tmp_path, "jsonl")
    adapter = FileAdapter(cfg)
    _write(adapter, "r1", email="a@example.org")
    real = FileStore._append

    def torn(self: FileStore, lines: list[bytes], at: int) -> int:
        with self.path.open("ab") as f:
            f.write(lines[0][:9])  # the power goes mid-record
        raise SystemExit("crash")

    monkeypatch.setattr(FileStore, "_append", torn)
    with pytest.raises(SystemExit):
        _write(adapter, "r2", email="b@example.org")
    assert records(tmp_path / "contacts.jsonl")[-1] == '{"id":"r2'
    monkeypatch.setattr(FileStore, "_append", real)
    FileAdapter(cfg)
    assert records(tmp_path / "contacts.jsonl") == [
        '{"id":"r1","email":"a@example.org"}',
        '{"id":"r2","email":"b@example.org"}',
    ]


def test_a_torn_first_append_and_a_replaced_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = config(tmp_path)
    adapter = FileAdapter(cfg)
    path = tmp_path / "contacts.csv"

    def torn(self: FileStore, lines: list[bytes], at: int) -> int:
        with self.path.open("ab") as f:
            f.write(b"id,email,fi")  # the power goes mid-header of a new file
        raise SystemExit("crash")

    monkeypatch.setattr(FileStore, "_append", torn)
    with pytest.raises(SystemExit):
        _write(adapter, "r1", email="a@example.org")
    monkeypatch.undo()
    FileAdapter(cfg)
    assert records(path) == ["id,email,first,last", "r1,a@example.org,,"]

    monkeypatch.setattr(FileStore, "_append", torn)
    with pytest.raises(SystemExit):
        _write(adapter, "r2", email="b@example.org")
    monkeypatch.undo()
    # Before the restart someone puts another export in its place: not cut, but kept.
    (tmp_path / "other.csv").write_text("id,email,first,last\nx1,x@example.org,X,Y\n")
    (tmp_path / "other.csv").replace(path)
    FileAdapter(cfg)
    assert records(path) == ["id,email,first,last", "x1,x@example.org,X,Y", "r2,b@example.org,,"]


def test_a_crash_after_the_rewrite_does_not_duplicate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = config(tmp_path)
    adapter = FileAdapter(cfg)
    _write(adapter, "r1", email="a@example.org", first_name="A")
    real = FileStore._rewrite

    def then_crash(self: FileStore, *args: Any) -> None:
        real(self, *args)
        raise SystemExit("crash before the staged writes are dropped")

    monkeypatch.setattr(FileStore, "_rewrite", then_crash)
    with pytest.raises(SystemExit), adapter.transaction() as tx:
        adapter.write_record(tx, "contact", "r1", "r1", {"first_name": "B"}, None)
        adapter.write_record(tx, "contact", None, "r2", {"email": "b@example.org"}, None)
    monkeypatch.undo()
    assert _pending(adapter) == 2
    FileAdapter(cfg)
    assert records(tmp_path / "contacts.csv") == [
        "id,email,first,last",
        "r1,a@example.org,B,",
        "r2,b@example.org,,",
    ]
    assert _pending(adapter) == 0


def test_a_batch_is_staged_at_once_and_a_redone_one_does_not_duplicate(tmp_path: Path) -> None:
    adapter = FileAdapter(config(tmp_path, "jsonl"))
    items: list[tuple[str, dict[str, Scalar]]] = [
        (f"r{i}", {"email": f"p{i}@example.org", "last_name": str(i)}) for i in range(4)
    ]
    with adapter.transaction() as tx:
        back = adapter.insert_many(tx, "contact", items[:2])
    with adapter.transaction() as tx:  # the batch again, after a crash lost its outcome
        again = adapter.insert_many(tx, "contact", items)
    assert [r.source_record_id for r in again] == ["r0", "r1", "r2", "r3"]
    assert [r.version for r in again[:2]] == [r.version for r in back]
    assert [json.loads(line)["id"] for line in records(tmp_path / "contacts.jsonl")] == [
        "r0",
        "r1",
        "r2",
        "r3",
    ]
    with adapter.transaction() as tx:
        stored = adapter.read_records(tx, "contact", ["r3", "r0"])
    assert {sid: row.fields for sid, row in stored.items()} == {
        r.source_record_id: r.fields for r in (again[3], again[0])
    }


def test_a_rewrite_changes_the_written_records_only_byte_for_byte(tmp_path: Path) -> None:
    path = tmp_path / "contacts.csv"
    before = (
        b"id,email,first,last\r\n"
        b"1,a@example.org,A,Crlf\r\n"
        b"not,a,record\r\n"
        b'2,b@example.org,"B\nB",Quoted\r\n'
        b"3,c@example.org,C,NoLineEnd"
    )
    path.write_bytes(before)
    adapter = FileAdapter(config(tmp_path))
    with adapter.transaction() as tx:
        adapter.write_record(tx, "contact", "2", "r", {"last_name": "New"}, None)
        adapter.delete_record(tx, "contact", "1", None)
        adapter.write_record(tx, "contact", None, "r4", {"email": "d@example.org"}, None)
    assert path.read_bytes() == (
        b"id,email,first,last\r\n"
        b"not,a,record\r\n"
        b'2,b@example.org,"B\nB",New\n'
        b"3,c@example.org,C,NoLineEnd\n"
        b"r4,d@example.org,,\n"
    )
    with adapter.transaction() as tx:
        assert sorted(adapter.list_ids(tx, "contact") or ()) == ["2", "3", "r4"]


def test_initial_none_starts_after_what_the_file_holds(tmp_path: Path) -> None:
    path = tmp_path / "contacts.csv"
    path.write_text("id,email,first,last\n1,a@example.org,A,B\n2,b@example.org,C,D\n")
    engine = SyncEngine(FileAdapter(config(tmp_path)), "export", overlap=2.0)
    cursors: dict[str, Any] = {"contact": engine.limit("contact")}  # as the runtime starts it
    assert captured(engine, cursors) == []
    (tmp_path / "next.csv").write_text(
        "id,email,first,last\n1,a@example.org,A,B\n2,b@example.org,C,E\n"
    )
    (tmp_path / "next.csv").replace(path)
    assert [(e.source_record_id, e.fields["last_name"]) for e in captured(engine, cursors)] == [
        ("2", "E")
    ]
