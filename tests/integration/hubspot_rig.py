"""A HubspotAdapter on the fake HubSpot (tests/fakes/hubspot.py), for the HubSpot tests:
its config, token file, links database, and a virtual clock the fake and the adapter
can share (then the limiter's waits cost no wall time)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from adapters.engine import SyncEngine
from adapters.hubspot.adapter import HubspotAdapter
from adapters.links import OutboxEntry
from router.adapter_config import AdapterConfig
from router.events import ChangeEvent, decode, new_event_id
from tests.fakes.hubspot import FakeHubSpot, hubspot_server

FIELDS = {"email": "email", "first_name": "firstname", "last_name": "lastname"}


@dataclass
class VirtualClock:
    """Seconds since the epoch that move only when someone sleeps."""

    now: float = field(default_factory=time.time)
    slept: float = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.slept += seconds


def config(fake: FakeHubSpot, tmp: Path, token: str | None = None, **api: Any) -> AdapterConfig:
    path = tmp / "hubspot.token"
    path.write_text((token or fake.token) + "\n")
    os.chmod(path, 0o600)
    return AdapterConfig.model_validate(
        {
            "name": "hubspot",
            "kind": "hubspot",
            "api": {"base_url": fake.base_url, "token_file": str(path), **api},
            "state": {"path": str(tmp / "state" / "hubspot.state.db")},
            "entities": {"contact": {"object": "contacts", "fields": FIELDS}},
        }
    )


@contextmanager
def rig(
    tmp: Path,
    *,
    virtual: VirtualClock | None = None,
    page_size: int = 500,
    fake_args: dict[str, Any] | None = None,
    **api: Any,
) -> Iterator[tuple[FakeHubSpot, HubspotAdapter, SyncEngine]]:
    """A fake HubSpot and an engine on a HubspotAdapter pointed at it. ``virtual``: both
    run on that clock (the adapter sleeps by moving it)."""
    extra: dict[str, Any] = dict(fake_args or {})
    kwargs: dict[str, Any] = {}
    if virtual is not None:
        extra["clock"] = virtual
        kwargs = {"clock": virtual, "sleep": virtual.sleep}
    api.setdefault("search_lag", "0s")
    with hubspot_server(**extra) as fake:
        adapter = HubspotAdapter(config(fake, tmp, **api), "hubspot test config", **kwargs)
        try:
            yield fake, adapter, SyncEngine(adapter, "hubspot", overlap=2.0, page_size=page_size)
        finally:
            adapter.close()


def drain(engine: SyncEngine) -> list[ChangeEvent]:
    """Every event the outbox owes, confirmed as the runtime would (pages of 1000)."""
    out: list[ChangeEvent] = []
    while True:
        owed: list[OutboxEntry] = engine.pending()
        if not owed:
            return out
        engine.mark_published(owed)
        out += [decode(e.body) for e in owed]


def delivery(
    record_id: str,
    fields: dict[str, Any],
    after: dict[str, int] | None = None,
    op: str = "upsert",
) -> ChangeEvent:
    """A change from another CRM ("sales") as the router delivers it, made after the
    version whose clock is ``after`` (None: a record new to this adapter)."""
    return ChangeEvent(
        event_id=new_event_id(),
        source="sales",
        actor="sales",
        entity="contact",
        record_id=record_id,
        source_record_id=f"S-{record_id}",
        op=op,  # type: ignore[arg-type]
        clock={**(after or {}), "sales": (after or {}).get("sales", 0) + 1},
        fields=fields,
        changed=sorted(fields),
        occurred_at=datetime.now(UTC),
    )
