"""``kind = "hubspot"``: HubSpot CRM v3 objects (contacts) through the REST API.

Capture is :mod:`adapters.hubspot.search` (modified-since, exact keyset); its cursor is
held ``api.search_lag`` behind now, because search shows a write only seconds to a
minute after it: each poll re-reads that stretch, and echo/duplicate suppression (the
SDK's) makes the re-reads no-ops. Archived records never appear in search, so deletes
are found the way hard deletes are: the SDK compares chunks of links with
``batch/read`` (:meth:`HubspotAdapter.existing_ids`). Writes go through the batch
endpoints; a create that HubSpot refuses with 409 because the email exists updates that
contact instead and links it (a link, not a duplicate). The links live in their own
database (:class:`~adapters.linkstore.LinkStoreAdapter`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.engine import Connection

from adapters import links
from adapters.base import SourceRow, VersionMismatch
from adapters.cleansing import Cleansing
from adapters.cursor import Horizon
from adapters.hubspot import records, search
from adapters.hubspot.client import HubspotClient, read_token
from adapters.hubspot.limiter import RequestLimiter
from adapters.hubspot.mapping import ObjectMapping
from adapters.linkstore import LinkStoreAdapter
from router.adapter_config import AdapterConfig
from router.config import parse_duration
from router.errors import PermanentWriteError, TransientWriteError
from router.events import Scalar

BATCH_MAX = 100  # inputs per batch request
LIST_MAX = 100  # records per list page


class HubspotAdapter(LinkStoreAdapter):
    def __init__(
        self,
        config: AdapterConfig,
        where: str = "adapter config",
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        api = config.api
        assert api is not None  # AdapterConfig: kind = "hubspot" needs [api]
        token = read_token(api.token_file, where)
        if config.database is None:
            Path(config.state.path).parent.mkdir(parents=True, exist_ok=True)
        super().__init__(config.links_url, where)
        self.name = config.name
        self.config = config
        self.cleansing = Cleansing.from_config(config.canonical)
        self.limiter = RequestLimiter(
            api.requests_per_10s, api.daily, clock=clock, sleep=sleep, adapter=config.name
        )
        self.client = HubspotClient(
            api.base_url,
            token,
            self.limiter,
            timeout=api.timeout,
            sleep=sleep,
            transport=transport,
            adapter=config.name,
        )
        self.lag = parse_duration(api.search_lag)
        self._clock = clock
        self.objects = {e: ObjectMapping(e, m) for e, m in config.entities.items()}
        # The row each conditional write's locked read saw (no locks in HubSpot: the
        # write compares against that read, which the SDK made in the same transaction).
        self._seen: dict[tuple[str, str], SourceRow] = {}
        # Migration paging: the list cursor HubSpot returned after a page's last id.
        self._cursors: dict[tuple[str, str], str] = {}
        self.create_links()

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        self._seen.clear()  # a locked read counts only within its own transaction
        with super().transaction() as tx:
            yield tx

    def _path(self, entity: str, tail: str = "") -> str:
        return f"/crm/v3/objects/{self.objects[entity].object}{tail}"

    def _row(self, entity: str, result: dict[str, Any]) -> SourceRow:
        return records.to_row(entity, self.objects[entity], result)

    def entities(self) -> dict[str, list[str]]:
        return {e: m.field_names for e, m in self.objects.items()}

    # -- capture --------------------------------------------------------------------
    def read_changes(
        self, tx: Connection, entity: str, since: Any, after: tuple[Any, str] | None, limit: int
    ) -> list[SourceRow]:
        anchor = None if after is None else (search.to_ms(after[0]), int(after[1]))
        found = search.read_changes(
            self.client,
            self._path(entity, "/search"),
            self.objects[entity].properties,
            since,
            anchor,
            limit,
        )
        return self._not_stale(tx, entity, [self._row(entity, r) for r in found])

    def _not_stale(self, tx: Connection, entity: str, rows: list[SourceRow]) -> list[SourceRow]:
        """Search serves an index that lags writes: for a while after a write (ours or a
        capture's) it still returns the version before. Such a row must not read as a
        change (it would undo the newer version everywhere), so a row older than its
        link's version reads as the link's content at the link's version (an echo, its
        place in the keyset kept). A row of a record deleted here is looked up: an
        archive still lagging in search is left out, a contact restored from the
        recycle bin (same id) is read as it is now."""
        known = links.by_source(tx, entity, [r.source_record_id for r in rows])
        tombs = [sid for sid, link in known.items() if link.deleted]
        live = self.read_records(tx, entity, tombs) if tombs else {}
        out: list[SourceRow] = []
        for row in rows:
            link = known.get(row.source_record_id)
            if link is None:
                out.append(row)
            elif link.deleted:
                restored = live.get(row.source_record_id)
                if restored is not None:
                    out.append(dataclasses.replace(restored, position=row.position))
            elif link.version is not None and search.parse_stamp(link.version) > row.position:
                out.append(dataclasses.replace(row, fields=dict(link.fields), version=link.version))
            else:
                out.append(row)
        return out

    def horizon(self, tx: Connection, entity: str) -> Horizon:
        # The cursor stays one search lag behind now: what search may not show yet is
        # read again next poll rather than passed.
        now = datetime.fromtimestamp(self._clock(), UTC)
        return Horizon(now - timedelta(seconds=self.lag))

    # -- reads ----------------------------------------------------------------------
    def read_record(
        self, tx: Connection, entity: str, source_record_id: str, for_update: bool = False
    ) -> SourceRow | None:
        row = self.read_records(tx, entity, [source_record_id]).get(source_record_id)
        if for_update:
            key = (entity, source_record_id)
            if row is None:
                self._seen.pop(key, None)
            else:
                self._seen[key] = row
        return row

    def read_records(
        self, tx: Connection, entity: str, source_record_ids: Sequence[str]
    ) -> dict[str, SourceRow]:
        ids = [sid for sid in dict.fromkeys(source_record_ids) if sid.isdigit()]
        found: dict[str, SourceRow] = {}
        for start in range(0, len(ids), BATCH_MAX):
            body = {
                "inputs": [{"id": sid} for sid in ids[start : start + BATCH_MAX]],
                "properties": self.objects[entity].properties,
            }
            answer = self.client.post(self._path(entity, "/batch/read"), body)
            for result in records.results(answer):  # 207: the missing ids are simply absent
                row = self._row(entity, result)
                found[row.source_record_id] = row
        return {sid: found[sid] for sid in source_record_ids if sid in found}

    def existing_ids(
        self, tx: Connection, entity: str, source_record_ids: Sequence[str]
    ) -> set[str] | None:
        """Which of these contacts are live: archived ones are not (a delete)."""
        return set(self.read_records(tx, entity, source_record_ids))

    def read_page(
        self, tx: Connection, entity: str, after: str | None, limit: int
    ) -> list[SourceRow]:
        """A page of the list endpoint (unlagged, unlike search), continuing from the
        cursor HubSpot gave after ``after``; a page not started here (a resumed
        migration) continues by search on ``hs_object_id GT after``, exact too."""
        props = ",".join(self.objects[entity].properties)
        cursor = None if after is None else self._cursors.pop((entity, after), None)
        rows: list[SourceRow] = []
        if after is not None and cursor is None:
            anchor = int(after)
            while len(rows) < limit:
                want = min(search.PAGE_MAX, limit - len(rows))
                body = search.id_after_body(anchor, self.objects[entity].properties, want)
                found = records.results(self.client.post(self._path(entity, "/search"), body))
                rows.extend(self._row(entity, r) for r in found)
                if len(found) < want:
                    break
                anchor = int(rows[-1].source_record_id)
            return rows
        while len(rows) < limit:
            params: dict[str, Any] = {
                "limit": min(LIST_MAX, limit - len(rows)),
                "properties": props,
            }
            if cursor is not None:
                params["after"] = cursor
            answer = self.client.get(self._path(entity), params)
            rows.extend(self._row(entity, r) for r in records.results(answer))
            nxt = ((answer.body or {}).get("paging") or {}).get("next") or {}
            cursor = nxt.get("after")
            if cursor is None or not rows:
                break
        if rows and cursor is not None:
            self._cursors[(entity, rows[-1].source_record_id)] = str(cursor)
        return rows

    def list_all(self, tx: Connection, entity: str) -> Iterator[SourceRow]:
        after: str | None = None
        while True:
            page = self.read_page(tx, entity, after, 500)
            yield from page
            if len(page) < 500:
                return
            after = page[-1].source_record_id

    def count_rows(self, tx: Connection, entity: str) -> int | None:
        body = {"filterGroups": [], "properties": ["hs_object_id"], "limit": 1}
        answer = self.client.post(self._path(entity, "/search"), body)
        total = (answer.body or {}).get("total")
        return int(total) if isinstance(total, int) else None

    # -- writes ---------------------------------------------------------------------
    def _check(self, tx: Connection, entity: str, sid: str, expected: str | None) -> None:
        """No conditional writes in HubSpot: compare with the row the SDK's locked read
        saw in this transaction (read again if there was none)."""
        current = self._seen.pop((entity, sid), None) or self.read_record(tx, entity, sid)
        if expected is not None and (current is None or current.version != expected):
            raise VersionMismatch(current)

    def _back(self, tx: Connection, entity: str, results: list[dict[str, Any]]) -> SourceRow:
        """The record written, from the batch's answer; read again when the answer lacks
        a mapped property (the read-back must be what HubSpot holds)."""
        if len(results) != 1:
            raise TransientWriteError(f"HubSpot answered {len(results)} results for one input")
        props = results[0].get("properties") or {}
        if all(p in props for p in self.objects[entity].properties):
            return self._row(entity, results[0])
        back = self.read_record(tx, entity, str(results[0]["id"]))
        if back is None:
            raise TransientWriteError(f"record {results[0]['id']} vanished right after the write")
        return back

    def _update(self, tx: Connection, entity: str, sid: str, props: dict[str, str]) -> SourceRow:
        body = {
            "inputs": [{"id": sid, "properties": props}],
            "properties": self.objects[entity].properties,
        }
        return self._back(
            tx, entity, records.results(self.client.post(self._path(entity, "/batch/update"), body))
        )

    def write_record(
        self,
        tx: Connection,
        entity: str,
        source_record_id: str | None,
        record_id: str,
        fields: dict[str, Scalar],
        expected_version: str | None,
    ) -> SourceRow:
        props = self.objects[entity].write(fields)
        if source_record_id is not None:
            self._check(tx, entity, source_record_id, expected_version)
            return self._update(tx, entity, source_record_id, props)
        wanted = self.objects[entity].properties
        body = {"inputs": [{"properties": _set(props)}], "properties": wanted}
        answer = self.client.post(self._path(entity, "/batch/create"), body, conflict_ok=True)
        if answer.status != 409:
            return self._back(tx, entity, records.results(answer))
        return self._link_existing(tx, entity, record_id, props, answer.body)

    def _link_existing(
        self, tx: Connection, entity: str, record_id: str, props: dict[str, str], body: Any
    ) -> SourceRow:
        """A create refused because the email exists: that contact *is* this record
        (HubSpot's emails are unique), so update it and link it, unless another record
        holds it already (two records, one email: a person must decide)."""
        sid = records.existing_id(body)
        if sid is None:
            raise PermanentWriteError("HubSpot 409 CONFLICT without the existing record's id")
        other = links.by_source(tx, entity, [sid]).get(sid)
        if other is not None and other.record_id != record_id:
            if not other.deleted:
                raise PermanentWriteError(
                    f"HubSpot 409 CONFLICT: contact {sid} has this email and is already "
                    f"record {other.record_id}"
                )
            # A record deleted here whose contact came back (restored): the tombstone
            # lets go of the id, as when capture finds a deleted record's id in use.
            links.save(tx, other.evolve(source_record_id=None))
        return self._update(tx, entity, sid, props)

    def insert_many(
        self, tx: Connection, entity: str, items: Sequence[tuple[str, dict[str, Scalar]]]
    ) -> list[SourceRow]:
        """``batch/create`` in chunks of 100. One bad input fails HubSpot's whole batch
        (and an existing email 409s it): that chunk is then written one input at a time,
        so the good inputs land and the existing contacts are linked. HubSpot has no
        transactions: what a failed batch created stays, and a retry links it by email."""
        out: list[SourceRow] = []
        for start in range(0, len(items), BATCH_MAX):
            chunk = items[start : start + BATCH_MAX]
            props = [self.objects[entity].write(fields) for _, fields in chunk]
            body = {
                "inputs": [{"properties": _set(p)} for p in props],
                "properties": self.objects[entity].properties,
            }
            try:
                answer = self.client.post(
                    self._path(entity, "/batch/create"), body, conflict_ok=True
                )
            except PermanentWriteError:
                answer = None
            results = records.results(answer) if answer is not None and answer.status < 300 else []
            if answer is not None and answer.status in (200, 201) and len(results) == len(chunk):
                out.extend(self._row(entity, r) for r in records.in_input_order(props, results))
                continue
            for record_id, fields in chunk:
                out.append(self.write_record(tx, entity, None, record_id, fields, None))
        sids = [row.source_record_id for row in out]
        if len(set(sids)) != len(sids):
            # Two inputs with one email: both 409-linked to one contact.
            raise PermanentWriteError("two records of the batch have the email of one contact")
        return out

    def delete_record(
        self, tx: Connection, entity: str, source_record_id: str, expected_version: str | None
    ) -> SourceRow | None:
        """Archive (HubSpot's delete; it answers 204 whether or not the record was live)."""
        self._check(tx, entity, source_record_id, expected_version)
        body = {"inputs": [{"id": source_record_id}]}
        self.client.post(self._path(entity, "/batch/archive"), body)
        return None

    def soft_deletes(self, entity: str) -> bool:
        return False  # an archived contact leaves search and reads: like a removed row

    def close(self) -> None:
        self.client.close()
        super().close()


def _set(props: dict[str, str]) -> dict[str, str]:
    """A new record's properties: an empty string clears a property, and a new record
    has none to clear."""
    return {k: v for k, v in props.items() if v != ""}
