"""The adapter under test: built from its config, driven through the SDK's engine.

:func:`open_subject` makes the adapter (``adapters.factory``), a
:class:`~adapters.engine.SyncEngine` on it (no broker: the kit plays the hub) and the
kind's CRM driver. Links of a non-SQL adapter go to a private folder, never the
adapter's real state; a SQL adapter keeps them in its database, as it always does.
Point the config at a test CRM: the checks insert, edit and delete records there.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from adapters import links
from adapters.base import Adapter, SourceRow
from adapters.canonical import validate
from adapters.delivery import ApplyResult
from adapters.engine import SyncEngine
from adapters.factory import make_adapter
from adapters.kit.driver import CrmDriver, DriverFactory, driver_for
from router.adapter_config import AdapterConfig, load_adapter
from router.config import parse_duration
from router.events import ChangeEvent, Op, Scalar, decode, new_event_id

HUB = "kithub"  # the source the kit's deliveries come from
PATIENCE = 10.0
POLL = 0.1


@dataclass
class Subject:
    config: AdapterConfig
    adapter: Adapter
    engine: SyncEngine
    driver: CrmDriver
    entity: str
    # Seconds a change may take to show in capture (a CRM whose change feed lags its
    # writes, as HubSpot's search does): capture is polled until then.
    patience: float = PATIENCE
    cursors: dict[str, Any] = field(default_factory=dict)
    _n: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    # -- the hub's side ---------------------------------------------------------------
    def capture(self) -> list[ChangeEvent]:
        """One capture pass as the runtime makes it (changes, then the hard-delete scan):
        the events it owes the hub, marked published."""
        result = self.engine.capture(self.cursors)
        self.cursors = result.positions
        self.engine.scan_hard_deletes()
        owed = self.engine.pending()
        self.engine.mark_published(owed)
        return [decode(entry.body) for entry in owed]

    def capture_for(self, source_record_id: str) -> list[ChangeEvent]:
        """Capture passes until one reports ``source_record_id`` (or :attr:`patience`
        runs out), and one pass more: a change must be reported once, not again."""
        deadline = time.monotonic() + self.patience
        events = self.capture()
        while not any(e.source_record_id == source_record_id for e in events):
            if time.monotonic() >= deadline:
                break
            time.sleep(POLL)  # the next poll, as the runtime's poll interval
            events += self.capture()
        return events + self.capture()

    def delivery(
        self, record_id: str, counter: int, fields: dict[str, Scalar], op: Op = "upsert"
    ) -> ChangeEvent:
        return ChangeEvent(
            event_id=new_event_id(),
            source=HUB,
            actor=HUB,
            entity=self.entity,
            record_id=record_id,
            source_record_id="kit",
            op=op,
            clock={HUB: counter},
            fields=fields,
            changed=sorted(fields),
            occurred_at=datetime.now(UTC),
        )

    def apply(self, event: ChangeEvent) -> ApplyResult:
        return self.engine.apply(event)

    # -- records ----------------------------------------------------------------------
    def sample(self) -> dict[str, Scalar]:
        """Values for every field the entity maps, new each call."""
        n = next(self._n)
        tag = uuid.uuid4().hex[:8]
        known: dict[str, Scalar] = {
            "email": f"kit-{tag}@example.org",
            "first_name": "Kit",
            "last_name": f"Check{n}",
            "name": f"Kit Company {tag}",
            "domain": f"kit-{tag}.example.org",
            "title": f"Deal {tag}",
            "amount": f"{n}.50",
        }
        typed: dict[str, Scalar] = {
            "bool": True,
            "integer": n,
            "number": n + 0.5,
            "decimal": f"{n}.25",
            "date": "2026-01-02",
            "datetime": "2026-01-02T03:04:05+00:00",
        }
        mapping = self.config.entities[self.entity]
        fields: dict[str, Scalar] = {}
        for name in self.engine.mapped[self.entity]:
            if name in mapping.references:
                continue  # a reference is another record's global id: none to give
            t = mapping.transforms.get(name)
            if t is not None and t.direction == "read":
                continue
            if t is not None and t.type is not None:
                fields[name] = typed[t.type]
            elif t is not None and t.map:
                fields[name] = next(iter(t.map.values()))
            else:
                fields[name] = known.get(name, f"kit {name} {tag}")
        adjust = getattr(self.driver, "sample", None)  # optional: the CRM's own types
        return adjust(self.entity, fields) if adjust is not None else fields

    def readable(self, fields: dict[str, Scalar]) -> dict[str, Scalar]:
        """``fields`` as capture reports them (cleansed; write-only fields left out)."""
        mapping = self.config.entities[self.entity]
        kept = {
            n: v
            for n, v in fields.items()
            if (t := mapping.transforms.get(n)) is None or t.direction != "write"
        }
        return validate(self.entity, kept, self.adapter.cleansing)

    def engine_link(self, record_id: str) -> links.Link | None:
        """The link the SDK keeps for ``record_id`` (what the last write returned)."""
        with self.adapter.transaction() as tx:
            return links.by_record(tx, record_id)

    def sid_of(self, record_id: str) -> str:
        link = self.engine_link(record_id)
        if link is None or link.source_record_id is None:
            raise AssertionError(f"record {record_id} has no row in the CRM")
        return link.source_record_id

    def read(self, source_record_id: str) -> SourceRow | None:
        with self.adapter.transaction() as tx:
            return self.adapter.read_record(tx, self.entity, source_record_id)

    def count(self) -> int | None:
        with self.adapter.transaction() as tx:
            return self.adapter.count_rows(tx, self.entity)

    def close(self) -> None:
        self.driver.close()
        self.adapter.close()


def private_state(config: AdapterConfig, workdir: Path) -> AdapterConfig:
    """``config`` with its state (and a non-SQL adapter's links) under ``workdir``."""
    state = config.state.model_copy(update={"path": workdir / "kit.state.db"})
    return config.model_copy(update={"state": state})


@contextmanager
def open_subject(
    config: AdapterConfig | Path,
    workdir: Path,
    driver: str | DriverFactory | None = None,
    entity: str | None = None,
    patience: float = PATIENCE,
) -> Iterator[Subject]:
    """The adapter of ``config`` (a TOML path or a model) ready for the checks."""
    cfg = load_adapter(config) if isinstance(config, Path) else config
    cfg = private_state(cfg, workdir)
    adapter = make_adapter(cfg, where="conformance config")
    try:
        crm = driver_for(cfg, adapter, driver)
    except BaseException:
        adapter.close()
        raise
    overlap = parse_duration(cfg.capture.overlap)
    engine = SyncEngine(adapter, cfg.name, overlap, cfg.capture.batch_size)
    subject = Subject(cfg, adapter, engine, crm, entity or next(iter(engine.mapped)), patience)
    try:
        yield subject
    finally:
        subject.close()
