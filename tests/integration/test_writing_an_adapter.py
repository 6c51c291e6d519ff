"""docs/writing-an-adapter.md's worked example, run as written: the TinyCRM adapter
block of the doc is saved as a module, loaded as ``kind = "plugin"`` from the doc's own
TOML, and driven through the SDK against tests/fakes/tinycrm.py (a local HTTP server
speaking the API the doc describes). If the doc's code rots, this fails."""

from __future__ import annotations

import re
import tomllib
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from adapters.base import Adapter
from adapters.engine import SyncEngine
from adapters.factory import make_adapter
from router.adapter_config import AdapterConfig
from router.errors import ConfigError, PermanentWriteError
from router.events import ChangeEvent, decode, new_event_id
from tests.fakes.tinycrm import TinyCrm, tinycrm_server

pytestmark = pytest.mark.integration

RECORD_1 = str(uuid.uuid4())
DOC = Path(__file__).resolve().parents[2] / "docs" / "writing-an-adapter.md"


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", DOC.read_text(), flags=re.S)


def _doc_config(crm: TinyCrm, tmp_path: Path) -> dict[str, Any]:
    (toml,) = [b for b in _blocks("toml") if 'kind = "plugin"' in b]
    raw = tomllib.loads(toml)
    token = tmp_path / "tinycrm.token"
    token.write_text(crm.token + "\n")
    token.chmod(0o600)
    raw["options"].update(base_url=crm.base_url, token_file=str(token))
    raw["state"] = {"path": str(tmp_path / "tinycrm.state.db")}
    return raw


@pytest.fixture
def crm() -> Iterator[TinyCrm]:
    with tinycrm_server() as server:
        yield server


@pytest.fixture
def config(crm: TinyCrm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AdapterConfig:
    (code,) = [b for b in _blocks("python") if "class TinyCrmAdapter" in b]
    (tmp_path / "tinycrm_adapter.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    return AdapterConfig.model_validate(_doc_config(crm, tmp_path))


@pytest.fixture
def adapter(config: AdapterConfig) -> Iterator[Adapter]:
    made = make_adapter(config)
    try:
        yield made
    finally:
        made.close()


def _event(record_id: str, clock: dict[str, int], op: str = "upsert", **fields: Any) -> ChangeEvent:
    return ChangeEvent(
        event_id=new_event_id(),
        source="sales",
        actor="sales",
        entity="contact",
        record_id=record_id,
        op=op,  # type: ignore[arg-type]
        clock=clock,
        fields=fields,
        changed=sorted(fields),
        occurred_at=datetime.now(UTC),
    )


def _published(engine: SyncEngine) -> list[ChangeEvent]:
    pending = engine.pending()
    engine.mark_published(pending)
    return [decode(entry.body) for entry in pending]


def test_capture_sees_inserts_updates_and_deletes_with_the_name_split(
    crm: TinyCrm, adapter: Adapter
) -> None:
    engine = SyncEngine(adapter, "tinycrm", overlap=1.0)
    ada = crm.user_create(email="ada@example.com", name="Ada King Lovelace", phone="+44-1")
    crm.user_create(email="alan@example.com", name="Alan Turing")
    first = engine.capture({})
    events = {str(e.fields["email"]): e for e in _published(engine)}
    assert set(events) == {"ada@example.com", "alan@example.com"}
    assert events["ada@example.com"].fields["first_name"] == "Ada King"
    assert events["ada@example.com"].fields["last_name"] == "Lovelace"

    assert engine.capture(first.positions).changes == 0  # the overlap re-read is no change
    crm.user_update(ada, phone="+44-2")
    second = engine.capture(first.positions)
    (update,) = _published(engine)
    assert update.op == "upsert" and update.fields["phone"] == "+44-2"
    crm.user_delete(ada)
    engine.capture(second.positions)
    (delete,) = _published(engine)
    assert delete.op == "delete" and delete.record_id == update.record_id


def test_a_delivery_is_written_once_and_its_echo_is_not_captured(
    crm: TinyCrm, adapter: Adapter
) -> None:
    engine = SyncEngine(adapter, "tinycrm", overlap=1.0)
    start = engine.capture({})
    event = _event(
        RECORD_1, {"sales": 1}, email="grace@example.com", first_name="Grace", last_name="Hopper"
    )
    assert engine.apply(event).action == "applied"
    assert engine.apply(event).action != "applied"  # a redelivery
    (person,) = crm.people.values()
    assert person["name"] == "Grace Hopper"
    assert engine.capture(start.positions).changes == 0  # our own write, not a change
    # A crash before the SDK committed: the same create again returns the same person.
    with adapter.transaction() as tx:
        again = adapter.write_record(tx, "contact", None, RECORD_1, dict(event.fields), None)
    assert again.source_record_id == str(person["id"]) and len(crm.people) == 1


def test_a_user_edit_is_never_overwritten_by_a_delivery(crm: TinyCrm, adapter: Adapter) -> None:
    engine = SyncEngine(adapter, "tinycrm", overlap=1.0)
    pid = crm.user_create(email="edsger@example.com", name="Edsger Dijkstra")
    first = engine.capture({})
    (created,) = _published(engine)
    crm.user_update(pid, phone="+31-1")  # not captured yet
    later = _event(
        created.record_id,
        {**created.clock, "sales": 1},
        email="edsger@example.com",
        first_name="Edsger W.",
        last_name="Dijkstra",
    )
    assert engine.apply(later).action == "local-change-first"
    assert crm.people[pid]["phone"] == "+31-1" and crm.people[pid]["name"] == "Edsger Dijkstra"
    assert engine.capture(first.positions).changes == 0  # published by the delivery already
    (published,) = _published(engine)
    assert published.fields["phone"] == "+31-1"


def test_a_refused_value_is_permanent_and_names_the_field_not_the_value(
    crm: TinyCrm, adapter: Adapter
) -> None:
    with pytest.raises(PermanentWriteError) as info, adapter.transaction() as tx:
        adapter.write_record(
            tx,
            "contact",
            None,
            str(uuid.uuid4()),
            {"email": "x@@bad", "first_name": "A", "last_name": "B"},
            None,
        )
    assert "email" in str(info.value) and "x@@bad" not in str(info.value)
    assert crm.people == {}


def test_429s_are_waited_out_and_nothing_is_lost(crm: TinyCrm, adapter: Adapter) -> None:
    engine = SyncEngine(adapter, "tinycrm", overlap=1.0)
    crm.throttle_next(2, retry_after=0.1)
    for i in range(3):
        event = _event(
            str(uuid.uuid4()),
            {"sales": 1},
            email=f"u{i}@example.com",
            first_name="U",
            last_name=f"{i}",
        )
        assert engine.apply(event).action == "applied"
    assert crm.throttled == 2 and len(crm.people) == 3


def test_migration_pages_by_id_and_counts_live_records(crm: TinyCrm, adapter: Adapter) -> None:
    ids = [crm.user_create(email=f"m{i}@example.com", name=f"M {i}") for i in range(7)]
    crm.user_delete(ids[0])
    with adapter.transaction() as tx:
        assert adapter.count_rows(tx, "contact") == 6
        page = adapter.read_page(tx, "contact", None, 4)
        rest = adapter.read_page(tx, "contact", page[-1].source_record_id, 4)
        assert [r.source_record_id for r in page + rest] == [str(i) for i in ids]
        assert len(list(adapter.list_all(tx, "contact"))) == 7


def test_a_plugin_that_cannot_be_loaded_is_one_line(crm: TinyCrm, tmp_path: Path) -> None:
    raw = _doc_config(crm, tmp_path)
    raw["plugin"] = "no_such_module_here:Adapter"
    with pytest.raises(ConfigError, match=r"plugin: cannot import 'no_such_module_here'") as info:
        make_adapter(AdapterConfig.model_validate(raw))
    assert "\n" not in str(info.value)
    raw["plugin"] = "json:JSONDecoder"
    with pytest.raises(ConfigError, match="is not an Adapter subclass"):
        make_adapter(AdapterConfig.model_validate(raw))
