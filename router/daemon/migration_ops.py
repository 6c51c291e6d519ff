"""The router's side of ``crmsync migrate`` and ``crmsync reconcile``: open, checkpoint,
count and finish migrations; send repairs.

A migration needs both adapters registered and alive: a page exported while the target
is down would wait in its sink, but a source that is down cannot export at all, and a
target that never registered receives nothing; the command says which one is missing
before anything starts.
"""

from __future__ import annotations

import logging
import time

from router import control_migration as cm
from router import migration_store
from router.broker.base import BrokerPublisher
from router.config import parse_duration
from router.daemon import repairs
from router.daemon.context import RouterContext
from router.errors import CrmsyncError
from router.logs import kv

log = logging.getLogger("crmsync.router")


class MigrationOps:
    def __init__(self, ctx: RouterContext, publisher: BrokerPublisher) -> None:
        self.ctx = ctx
        self._publisher = publisher

    def _check_alive(self, name: str, role: str) -> dict[str, list[str]]:
        ctx = self.ctx
        reg = ctx.registry.get(name)
        if reg is None:
            raise CrmsyncError(
                f"the {role} adapter {name!r} is not registered: start 'crmsync adapter "
                f"--config config/adapters/{name}.toml' first"
            )
        last = ctx.beats.get(name, reg.last_heartbeat)
        timeout = parse_duration(ctx.config.router.heartbeat_timeout)
        age = time.time() - last
        if age > timeout:
            raise CrmsyncError(
                f"the {role} adapter {name!r} is not running (last heartbeat {age:.0f}s ago): "
                "start it, then run the command again"
            )
        return reg.entities

    async def open(self, req: cm.OpenMigration) -> cm.MigrationOpened:
        if req.source == req.target:
            raise CrmsyncError("--from and --to name the same adapter")
        source = self._check_alive(req.source, "source")
        target = self._check_alive(req.target, "target")
        common = sorted(set(source) & set(target))
        entities = list(req.entities) or common
        for entity in entities:
            for name, mapped in ((req.source, source), (req.target, target)):
                if entity not in mapped:
                    raise CrmsyncError(f"adapter {name!r} does not map entity {entity!r}")
        if not entities:
            raise CrmsyncError(f"{req.source!r} and {req.target!r} map no entity in common")
        fields = {e: sorted(set(source[e]) & set(target[e])) for e in entities}
        store = self.ctx.store

        def work() -> cm.MigrationOpened:
            with store.engine.begin() as conn:
                latest = migration_store.latest(conn, req.source, req.target)
                running = latest if latest and latest.status == "running" else None
                if req.resume:
                    if latest is None:
                        raise CrmsyncError(
                            f"no migration from {req.source} to {req.target} to resume: "
                            "run without --resume"
                        )
                    m, resumed = latest, True
                elif running is not None:
                    raise CrmsyncError(
                        f"migration {running.id} from {req.source} to {req.target} is "
                        "unfinished: run the same command with --resume"
                    )
                else:
                    m, resumed = (
                        migration_store.start(conn, req.source, req.target, entities),
                        False,
                    )
                return cm.MigrationOpened(
                    id=m.id,
                    resumed=resumed,
                    status=m.status,
                    entities=m.entities,
                    cursors=m.cursors,
                    previous=latest.id if latest is not None and not resumed else None,
                    fields={e: fields.get(e, []) for e in m.entities},
                )

        opened = await self.ctx.db(work)
        log.info(
            "migration opened",
            extra=kv(
                migration_id=opened.id,
                source=req.source,
                target=req.target,
                resumed=opened.resumed,
            ),
        )
        return opened

    async def pair(self, req: cm.DescribePair) -> cm.Pair:
        a = self._check_alive(req.a, "first")
        b = self._check_alive(req.b, "second")
        common = sorted(set(a) & set(b))
        keys = self.ctx.store.match_keys
        return cm.Pair(
            fields={e: sorted(set(a[e]) & set(b[e])) for e in common},
            keys={e: list(keys[e]) for e in common if e in keys},
        )

    async def checkpoint(self, req: cm.Checkpoint) -> cm.Done:
        cursor = {"after": req.after, "exported": req.exported, "done": req.done}

        def work() -> None:
            with self.ctx.store.engine.begin() as conn:
                migration_store.save_cursor(conn, req.id, req.entity, cursor)

        try:
            await self.ctx.db(work)
        except KeyError:
            raise CrmsyncError(f"no migration {req.id}") from None
        return cm.Done()

    async def progress(self, req: cm.MigrationProgress) -> cm.MigrationCounts:
        after = (req.after[0], req.after[1]) if req.after and len(req.after) == 2 else None

        def work() -> cm.MigrationCounts:
            with self.ctx.store.engine.begin() as conn:
                counts = migration_store.counts(conn, req.id)
                listed = (
                    migration_store.listed(conn, req.id, req.outcomes, after, req.limit)
                    if req.outcomes
                    else []
                )
            items: list[list[str | None]] = [
                [i.entity, i.source_record_id, i.record_id, i.outcome, i.detail] for i in listed
            ]
            return cm.MigrationCounts(counts=counts, items=items)

        return await self.ctx.db(work)

    async def finish(self, req: cm.FinishMigration) -> cm.Done:
        def work() -> None:
            with self.ctx.store.engine.begin() as conn:
                migration_store.finish(conn, req.id)

        await self.ctx.db(work)
        log.info("migration finished", extra=kv(migration_id=req.id))
        return cm.Done()

    async def redeliver(self, req: cm.Redeliver) -> cm.Redelivered:
        for name in req.targets:
            if name not in self.ctx.registry:
                raise CrmsyncError(f"no adapter named {name!r} is registered")
        states = await self.ctx.db(self.ctx.store.load, req.record_ids)
        ready = repairs.sendable(states.values(), req.entity)
        missing = sorted(set(req.record_ids) - {s.record_id for s in ready})
        named = await self.ctx.db(self.ctx.store.aliases_of, [s.record_id for s in ready])
        sent = await repairs.send_repairs(
            self._publisher, ready, req.targets, named, cause="reconcile"
        )
        return cm.Redelivered(sent=sent, missing=missing)
