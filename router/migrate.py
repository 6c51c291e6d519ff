"""``crmsync migrate``: a bulk migration through the hub, from checkpoint to verification.

The command only orchestrates; the data path is the hub's own. It asks the source
adapter for one page at a time (the adapter publishes the page as one batch and answers
once the broker confirmed it), saves the checkpoint in the router's state after every
page, keeps no more than a few pages ahead of the router, waits until the target wrote
what the router routed to it, then compares every migrated record in both CRMs through
the id map (:mod:`router.compare`). Killing any process at any moment and running the
same command with ``--resume`` repeats at most the pages after the last checkpoint, which
the clocks make harmless: the result is the same as an uninterrupted run.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from router import adapter_control as ac
from router import control_migration as cm
from router.broker.rpc import RpcClient
from router.compare import Digest, Tally, merge, tally
from router.errors import RouterUnavailable

WINDOW_PAGES = 4  # pages the export may run ahead of the router
POLL = 0.5  # seconds between looks at the router's and the target's progress
ASK_AGAIN = 5.0  # seconds before an unanswered look at the target's progress is asked again
UNMIGRATABLE = ("invalid", "duplicates", "ambiguous")
ROUTER_FAILED = ("parked", "refused")
LISTED = ("invalid", "duplicates", "ambiguous", "parked", "refused")

Say = Callable[[str], None]
# (entity, records exported so far, the source's total or None): a progress bar's tick.
Meter = Callable[[str, int, int | None], None]


def _no_meter(_entity: str, _done: int, _total: int | None) -> None:
    return None


@dataclass
class Plan:
    source: str
    target: str
    entities: list[str]
    batch_size: int = 500
    rate: float | None = None
    resume: bool = False


@dataclass
class EntityReport:
    source: int = 0
    created: int = 0
    linked: int = 0
    updated: int = 0
    unchanged: int = 0
    invalid: int = 0
    duplicates: int = 0
    ambiguous: int = 0
    failed: int = 0
    mismatched: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class Report:
    migration_id: str
    source: str
    target: str
    resumed: bool
    entities: dict[str, EntityReport] = field(default_factory=dict)
    records: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    elapsed: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)  # seconds per phase

    @property
    def verified(self) -> bool:
        return all(e.mismatched == 0 and e.failed == 0 for e in self.entities.values())

    @property
    def clean(self) -> bool:
        """Nothing to report: exit 0."""
        return self.verified and not any(
            e.invalid or e.ambiguous or e.duplicates or e.failed for e in self.entities.values()
        )

    @property
    def nothing_to_do(self) -> bool:
        return all(
            e.created == 0 and e.updated == 0 and e.linked == 0 for e in self.entities.values()
        )

    def summary(self) -> dict[str, Any]:
        return {
            "verified": self.verified,
            "migration_id": self.migration_id,
            "from": self.source,
            "to": self.target,
            "entities": {name: e.as_dict() for name, e in self.entities.items()},
        }

    def full(self) -> dict[str, Any]:
        return {
            **self.summary(),
            "elapsed_seconds": round(self.elapsed, 1),
            "phase_seconds": {k: round(v, 1) for k, v in self.phases.items()},
            "records": self.records,
        }


class Hub:
    """The calls a migration makes, to the router and to the two adapters."""

    def __init__(self, rpc: RpcClient, timeout: float = 60.0) -> None:
        self.rpc = rpc
        self.timeout = timeout

    async def _asked_again(
        self, ask: Callable[[float], Awaitable[Any]], who: str, running: str
    ) -> Any:
        """``ask(timeout)`` again every few seconds until it is answered; fails only after
        the whole timeout of silence (``who`` said nothing; ``running``: what to check).
        For idempotent requests: one lost with a process that died (a request to a
        stopped adapter is dropped, not queued) would otherwise hold the command for the
        full timeout, though a restarted or standby process answers the next one at once."""
        deadline = time.monotonic() + self.timeout
        while True:
            wait = min(ASK_AGAIN, max(deadline - time.monotonic(), 0.1))
            try:
                return await ask(wait)
            except RouterUnavailable:
                if time.monotonic() >= deadline:
                    raise RouterUnavailable(
                        f"{who} did not answer for {self.timeout:g}s; is {running}? "
                        "(see 'crmsync status')"
                    ) from None

    async def router(self, request: Any, expected: Any, once: bool = False) -> Any:
        """A request to the router. Every one a migration makes but the first (open) is
        idempotent (a look, a checkpoint of the same cursor, finish): asked again."""
        if once:
            return await self.rpc.request(request, expected, timeout=self.timeout)
        return await self._asked_again(
            lambda wait: self.rpc.request(request, expected, timeout=wait),
            "the router",
            "'crmsync router' running",
        )

    async def adapter(
        self, request: ac.AdapterRequest, expected: Any, timeout: float | None = None
    ) -> Any:
        return await self.rpc.ask_adapter(
            request, expected, request.name, timeout=timeout or self.timeout
        )

    async def digests(
        self, adapter: str, entity: str, fields: list[str], page: int = 2000
    ) -> AsyncIterator[Digest]:
        after: str | None = None
        while True:
            got: ac.Digested = await self.adapter(
                ac.Digest(name=adapter, entity=entity, fields=fields, after=after, limit=page),
                ac.Digested,
            )
            for record_id, sid, digest, _state in got.items:
                assert record_id is not None
                yield Digest(record_id, sid, digest)
            if got.done or got.last is None:
                return
            after = got.last

    async def counts(self, migration_id: str) -> dict[str, dict[str, int]]:
        reply: cm.MigrationCounts = await self.router(
            cm.MigrationProgress(id=migration_id), cm.MigrationCounts
        )
        return reply.counts

    async def target_counts(self, target: str, migration_id: str) -> dict[str, dict[str, int]]:
        """The target's logged outcomes; a read-only look, so asked again."""
        request = ac.MigrationLog(name=target, migration_id=migration_id, limit=1)
        reply: ac.MigrationLogged = await self._asked_again(
            lambda wait: self.adapter(request, ac.MigrationLogged, timeout=wait),
            f"adapter {target!r}",
            f"'crmsync adapter' running for {target}",
        )
        return reply.counts


async def export(
    hub: Hub, plan: Plan, opened: cm.MigrationOpened, say: Say, meter: Meter = _no_meter
) -> dict[str, int]:
    """Every page of every entity, from the checkpoint on; exported records per entity."""
    exported: dict[str, int] = {}
    started = time.monotonic()
    for entity in opened.entities:
        cursor = opened.cursors.get(entity) or {}
        after, count, done = cursor.get("after"), int(cursor.get("exported", 0)), cursor.get("done")
        pages, resumed_at = 0, count
        counted: ac.Counted = await hub.adapter(
            ac.Count(name=plan.source, entity=entity), ac.Counted
        )
        total = counted.rows
        meter(entity, count, total)
        while not done:
            reply: ac.Exported = await hub.adapter(
                ac.Export(
                    name=plan.source,
                    migration_id=opened.id,
                    entity=entity,
                    target=plan.target,
                    after=after,
                    limit=plan.batch_size,
                    rate=plan.rate,
                ),
                ac.Exported,
            )
            count += reply.published + len(reply.invalid)
            after, done = reply.last or after, reply.done
            await hub.router(
                cm.Checkpoint(id=opened.id, entity=entity, after=after, exported=count, done=done),
                cm.Done,
            )
            rate = (count - resumed_at) / max(time.monotonic() - started, 1e-3)
            left = f", about {(total - count) / rate:.0f}s left" if total and rate > 0 else ""
            of = f" of {total}" if total is not None else ""
            say(f"{entity}: {count}{of} records exported from {plan.source} ({rate:.0f}/s{left})")
            meter(entity, count, total)
            pages += 1
            if pages % WINDOW_PAGES == 0:  # a look costs a count: not after every page
                window = plan.batch_size * WINDOW_PAGES
                await _keep_window(hub, plan, opened.id, entity, count, window)
        exported[entity] = count
    return exported


async def _keep_window(
    hub: Hub, plan: Plan, migration_id: str, entity: str, sent: int, window: int
) -> None:
    """Until at most ``window`` exported records are neither settled by the router nor
    written by the target: what waits in queues and prefetch buffers stays bounded
    (memory flat however large the migration), and the export runs at the target's
    pace instead of piling batches into its sink."""
    while True:
        mine = (await hub.counts(migration_id)).get(entity, {})
        settled = sum(n for k, n in mine.items() if k not in ("routed", "linked"))
        written = sum((await hub.target_counts(plan.target, migration_id)).get(entity, {}).values())
        if sent - settled - written <= window:
            return
        await asyncio.sleep(POLL / 5)


async def wait_written(
    hub: Hub, plan: Plan, migration_id: str, exported: dict[str, int], say: Say
) -> tuple[dict[str, dict[str, int]], dict[str, dict[str, int]]]:
    """Until the router judged every exported record and the target logged every record
    routed to it; the router's and the target's counts."""
    last_said = 0.0
    while True:
        routed = await hub.counts(migration_id)
        written = await hub.target_counts(plan.target, migration_id)
        behind = 0
        for entity, n in exported.items():
            mine = routed.get(entity, {})
            behind += max(0, n - sum(mine.values()))
            to_target = mine.get("routed", 0) + mine.get("linked", 0)
            behind += max(0, to_target - sum(written.get(entity, {}).values()))
        if behind == 0:
            return routed, written
        now = time.monotonic()
        if now - last_said > 5:
            say(
                f"waiting for {behind} records to be judged by the router "
                f"and written to {plan.target}"
            )
            last_said = now
        await asyncio.sleep(POLL)


async def _listed(hub: Hub, migration_id: str, outcomes: tuple[str, ...]) -> list[list[str | None]]:
    found: list[list[str | None]] = []
    after: list[str] | None = None
    while True:
        reply: cm.MigrationCounts = await hub.router(
            cm.MigrationProgress(id=migration_id, outcomes=list(outcomes), after=after, limit=5000),
            cm.MigrationCounts,
        )
        found += reply.items
        if len(reply.items) < 5000:
            return found
        last = reply.items[-1]
        after = [str(last[0]), str(last[1])]


async def verify(hub: Hub, plan: Plan, entity: str, fields: list[str], skip: set[str]) -> Tally:
    """Every record of the source compared with the target (records the target holds and
    the source never had are not this migration's)."""
    a = hub.digests(plan.source, entity, fields)
    b = hub.digests(plan.target, entity, fields)
    return await tally(merge(a, b, skip=skip, only_a=True), keep_ids=10000)


async def run(hub: Hub, plan: Plan, say: Say, meter: Meter = _no_meter) -> Report:
    started = time.monotonic()
    opened: cm.MigrationOpened = await hub.router(
        cm.OpenMigration(
            source=plan.source, target=plan.target, entities=plan.entities, resume=plan.resume
        ),
        cm.MigrationOpened,
        once=True,  # asked twice, a new run would find itself unfinished
    )
    verb = "resuming" if opened.resumed else "starting"
    say(
        f"{verb} migration {opened.id}: {plan.source} -> {plan.target} "
        f"({', '.join(opened.entities)})"
    )
    # The target's cap is this run's --rate (or none: a killed run's lapses only later).
    await hub.adapter(ac.Limit(name=plan.target, rate=plan.rate), ac.Limited)
    exported = await export(hub, plan, opened, say, meter)
    exported_at = time.monotonic()
    totals = {e: int((opened.cursors.get(e) or {}).get("exported", 0)) for e in opened.entities}
    totals.update(exported)
    routed, written = await wait_written(hub, plan, opened.id, totals, say)
    written_at = time.monotonic()
    listed = await _listed(hub, opened.id, LISTED)
    report = Report(opened.id, plan.source, plan.target, opened.resumed)
    failures = await hub.adapter(
        ac.MigrationLog(name=plan.target, migration_id=opened.id, limit=10000), ac.MigrationLogged
    )
    for entity in opened.entities:
        say(f"{entity}: verifying every record in {plan.source} and {plan.target}")
        mine = routed.get(entity, {})
        theirs = written.get(entity, {})
        rep = report.entities[entity] = EntityReport(
            source=totals.get(entity, 0),
            created=theirs.get("created", 0),
            linked=theirs.get("linked", 0),
            updated=theirs.get("updated", 0),
            unchanged=theirs.get("unchanged", 0),
            invalid=mine.get("invalid", 0),
            duplicates=mine.get("duplicates", 0),
            ambiguous=mine.get("ambiguous", 0),
            failed=theirs.get("failed", 0)
            + theirs.get("refused", 0)
            + sum(mine.get(k, 0) for k in ROUTER_FAILED),
        )
        skip = {str(i[2]) for i in listed if i[0] == entity and i[2] and i[3] in UNMIGRATABLE}
        failed_ids = {str(f[1]) for f in failures.failed if f[0] == entity}
        failed_ids |= {
            str(i[2]) for i in listed if i[0] == entity and i[2] and i[3] in ROUTER_FAILED
        }
        checked = await verify(hub, plan, entity, opened.fields.get(entity, []), skip)
        off = [*checked.ids.get("missing_in_b", []), *checked.ids.get("different", [])]
        mismatched = [r for r in off if r not in failed_ids]
        rep.mismatched = checked.missing_in_b + checked.different - (len(off) - len(mismatched))
        report.records.setdefault("mismatched", []).extend(
            {"entity": entity, "record_id": r} for r in mismatched
        )
    for item in listed:
        where, sid, record_id, outcome, detail = item
        kind = "failed" if outcome in ROUTER_FAILED else str(outcome)
        report.records.setdefault(kind, []).append(
            {"entity": where, "source_record_id": sid, "record_id": record_id, "reason": detail}
        )
    for entity, record_id, reason in failures.failed:
        report.records.setdefault("failed", []).append(
            {"entity": entity, "record_id": record_id, "reason": reason}
        )
    await hub.router(cm.FinishMigration(id=opened.id), cm.Done)
    await hub.adapter(ac.Limit(name=plan.target, rate=None), ac.Limited)
    report.elapsed = time.monotonic() - started
    report.phases = {
        "export": exported_at - started,
        "written": written_at - exported_at,
        "verify": report.elapsed - (written_at - started),
    }
    return report
