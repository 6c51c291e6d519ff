"""The router's side of ``crmsync migrate --dry-run``: answer the identity question for a
page of source rows from what is stored, in one read-only transaction (the rules are
:func:`router.migrate_plan.judge`). Nothing is written: no alias, member, match index
entry, parked event or migration row, and the key values are never logged."""

from __future__ import annotations

from router import control_migration as cm
from router.daemon.context import RouterContext
from router.errors import CrmsyncError
from router.identity import key_values
from router.migrate_plan import judge


class PlanOps:
    def __init__(self, ctx: RouterContext) -> None:
        self.ctx = ctx

    async def match(self, req: cm.PlanMatch) -> cm.PlanMatched:
        store = self.ctx.store
        for name in (req.source, req.target):
            if name not in self.ctx.registry:
                raise CrmsyncError(f"no adapter named {name!r} is registered")
        keys = list(store.match_keys.get(req.entity, ()))

        def work() -> cm.PlanMatched:
            with store.engine.connect() as conn:
                ids = [i.record_id for i in req.items if i.record_id is not None]
                aliases = store.load_aliases(ids, conn)
                wanted = {aliases[r].record_id if r in aliases else r for r in ids}
                known = set(store.load(wanted, conn))
                unseen = [
                    i
                    for i in req.items
                    if i.record_id is None
                    or (i.record_id not in aliases and i.record_id not in known)
                ]
                parked = store.parked_by_record(
                    (i.record_id for i in unseen if i.record_id is not None), conn
                )
                triples = {
                    (req.entity, key, value)
                    for i in unseen
                    for key, value in key_values(dict(i.keys), keys)
                }
                found = store.match_candidates(triples, conn) if triples else {}
                candidates = {(k, v): ids for (_, k, v), ids in found.items()}
                matched = {r for ids in candidates.values() for r in ids}
                members = store.members_of(matched, conn)
                aliases_of = store.aliases_of(known | matched, conn)
            verdicts = judge(
                req.items,
                keys=keys,
                source=req.source,
                target=req.target,
                aliases=aliases,
                known=known,
                aliases_of=aliases_of,
                parked=parked,
                candidates=candidates,
                members=members,
            )
            return cm.PlanMatched(items=verdicts)

        return await self.ctx.db(work)
