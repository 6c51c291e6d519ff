"""``crmsync migrate --dry-run``: the plan, page by page, with nothing changed anywhere.

No migration is opened, nothing is published and neither CRM nor the hub is written:
the source reads a page of rows without capture (:class:`~router.adapter_control.PlanRows`),
the router says what it would make of them from its stored identity tables
(:class:`~router.control_migration.PlanMatch`), the target hashes the records it holds
(:class:`~router.adapter_control.Hashes`), and :func:`router.migrate_plan.plan_page`
names each row's outcome. Memory is one page plus the keys of rows the hub never saw.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from router import adapter_control as ac
from router import control_migration as cm
from router.errors import CrmsyncError
from router.migrate import Hub, Meter, Plan, Say, _no_meter
from router.migrate_plan import OUTCOMES, Planned, Seen, plan_page

PROBLEMS = ("invalid", "ambiguous", "duplicates")
HASHES = 5000  # record ids per request to the target


@dataclass
class DryRunReport:
    source: str
    target: str
    entities: dict[str, dict[str, int]] = field(default_factory=dict)
    records: dict[str, list[dict[str, Any]]] | None = None  # None: not kept

    @property
    def clean(self) -> bool:
        """Exit 0: the real run would have nothing to report."""
        return not any(c[k] for c in self.entities.values() for k in PROBLEMS)

    def summary(self) -> dict[str, Any]:
        return {"dry_run": True, "from": self.source, "to": self.target, "entities": self.entities}

    def full(self) -> dict[str, Any]:
        return {**self.summary(), "records": self.records or {}}

    def add(self, entity: str, planned: list[Planned]) -> None:
        counts = self.entities[entity]
        for p in planned:
            counts["source"] += 1
            counts[p.outcome] += 1
        if self.records is not None:
            for p in planned:
                item: dict[str, Any] = {
                    "entity": entity,
                    "source_record_id": p.source_record_id,
                    "record_id": p.record_id,
                }
                if p.reason:
                    item["reason"] = p.reason
                self.records.setdefault(p.outcome, []).append(item)


async def dry_run(
    hub: Hub, plan: Plan, say: Say, keep_records: bool = False, meter: Meter = _no_meter
) -> DryRunReport:
    pair: cm.Pair = await hub.router(cm.DescribePair(a=plan.source, b=plan.target), cm.Pair)
    entities = list(plan.entities) or sorted(pair.fields)
    for entity in entities:
        if entity not in pair.fields:
            raise CrmsyncError(f"{plan.source!r} and {plan.target!r} do not both map {entity!r}")
    if not entities:
        raise CrmsyncError(f"{plan.source!r} and {plan.target!r} map no entity in common")
    report = DryRunReport(plan.source, plan.target, records={} if keep_records else None)
    for entity in entities:
        report.entities[entity] = dict.fromkeys(("source", *OUTCOMES), 0)
        await _plan_entity(hub, plan, entity, pair, report, say, meter)
    return report


async def _plan_entity(
    hub: Hub,
    plan: Plan,
    entity: str,
    pair: cm.Pair,
    report: DryRunReport,
    say: Say,
    meter: Meter,
) -> None:
    fields, keys = pair.fields[entity], pair.keys.get(entity, [])
    counted: ac.Counted = await hub.adapter(ac.Count(name=plan.source, entity=entity), ac.Counted)
    meter(entity, 0, counted.rows)
    seen = Seen()
    after: str | None = None
    while True:
        page: ac.PlannedRows = await hub.adapter(
            ac.PlanRows(
                name=plan.source,
                entity=entity,
                fields=fields,
                keys=keys,
                after=after,
                limit=plan.batch_size,
            ),
            ac.PlannedRows,
        )
        valid = [r for r in page.rows if r.error is None]
        verdicts: list[cm.Verdict] = []
        if valid:
            items = [
                cm.MatchItem(
                    source_record_id=r.source_record_id, record_id=r.record_id, keys=r.keys
                )
                for r in valid
            ]
            matched: cm.PlanMatched = await hub.router(
                cm.PlanMatch(source=plan.source, target=plan.target, entity=entity, items=items),
                cm.PlanMatched,
            )
            verdicts = matched.items
        by_sid = {r.source_record_id: v for r, v in zip(valid, verdicts, strict=True)}
        ids = sorted({t for v in verdicts for t in v.target_ids})
        hashes: dict[str, str | None] = {}
        for start in range(0, len(ids), HASHES):  # a record's aliases may add ids
            hashed: ac.Hashed = await hub.adapter(
                ac.Hashes(
                    name=plan.target,
                    entity=entity,
                    fields=fields,
                    record_ids=ids[start : start + HASHES],
                ),
                ac.Hashed,
            )
            hashes.update(hashed.hashes)
        report.add(entity, plan_page(page.rows, by_sid, hashes, seen))
        planned = report.entities[entity]["source"]
        meter(entity, planned, counted.rows)
        say(f"{entity}: {planned} records planned")
        if page.done or page.last is None:
            return
        after = page.last
