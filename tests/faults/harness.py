"""The harness that runs one fault scenario under steady user load and judges it.

:func:`run` starts the system (router + three adapters as processes) against a broker,
lets :class:`~tests.faults.workload.Users` edit the CRMs, applies the scenario's fault in
the middle of the load, writes a probe record as soon as the fault is healed (its trip
to every CRM is the *recovery time*), stops the users, waits until the CRMs settle, and
hands the users' history and the CRMs' rows to the checker.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

from router import topology
from router.demo.crms import CRMS
from tests.faults.checker import Verdict, check, dlq_problems
from tests.faults.proxy import Proxy
from tests.faults.scenarios import ADAPTERS, HEARTBEAT, Ctx, Scenario
from tests.faults.workload import (
    EDITED,
    FaultSpine,
    Users,
    drain_dead_letters,
    snapshot,
    visible_everywhere,
    wait_for,
)
from tests.rabbit_node import RabbitNode


@dataclass
class Outcome:
    scenario: str
    events: int
    verdict: Verdict
    dead_letters: int
    dlq_problems: list[str]
    recovery: float | None
    restarts: dict[str, int]
    notes: list[str]
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.verdict.clean and not self.dlq_problems

    def reason(self) -> str:
        if self.error:
            return self.error
        return "; ".join([*self.verdict.problems[:3], *self.dlq_problems[:2]])


def _queues(ctx: Ctx) -> str:
    """The node's queues (messages ready/unacked, consumers), for a row that failed."""
    if ctx.node is None:
        return ""
    try:
        out = ctx.node.ctl(
            "-q", "list_queues", "name", "messages_ready", "messages_unacknowledged", "consumers"
        )
    except RuntimeError as e:
        return f"list_queues failed: {e}"
    rows = [line.split() for line in out.splitlines() if line.startswith("crmsync.")]
    consumed = (topology.INGRESS, topology.ROUTER_CONTROL, "crmsync.sink.")
    names = {r[0] for r in rows}
    busy = [
        f"{r[0]} ready={r[1]} unacked={r[2]} consumers={r[3]}"
        for r in rows
        if r[1:3] != ["0", "0"] or (r[0].startswith(consumed) and r[3] == "0")
    ]
    busy += [
        f"{topology.sink_queue(a)} missing" for a in ADAPTERS if topology.sink_queue(a) not in names
    ]
    return "queues: " + (", ".join(busy) or "every queue empty, every consumer there")


def _retries(workdir: Path) -> list[str]:
    """What the adapters' goodbye lines say they retried or dead-lettered."""
    found = []
    for name in ADAPTERS:
        log = workdir / "logs" / f"{name}.log"
        text = log.read_text(errors="replace") if log.exists() else ""
        for word in ("retried", "dead-lettered"):
            total = sum(int(m) for m in re.findall(rf"\b{word}=(\d+)", text))
            if total:
                found.append(f"{name} {word} {total}")
    return found


# -- the harness ------------------------------------------------------------------------
def run(
    scenario: Scenario,
    workdir: Path,
    url: str | None = None,
    before: float = 4.0,
    after: float = 4.0,
    rate: float = 10.0,
    settle: float = 120.0,
) -> Outcome:
    """Run ``scenario`` under load. ``url`` is a broker (vhost) to use when the scenario
    needs no node of its own; otherwise one is started under ``workdir`` and killed after."""
    node = None
    if scenario.own_node or url is None:
        node = RabbitNode(workdir / "node")
        node.start()
        url = node.url
    proxy = Proxy(int(url.rsplit(":", 1)[1].split("/")[0])).start() if scenario.proxy else None
    daemon_url = f"{proxy.url}?heartbeat={HEARTBEAT}" if proxy else None
    spine = FaultSpine(workdir, url, daemon_url)
    users = Users(spine.dbs)
    ctx = Ctx(spine, users, url, node, proxy)
    errors: list[str] = []
    recovery: float | None = None
    verdict = Verdict()
    dead: list[tuple[str, dict[str, object]]] = []
    started: dict[str, int] = {}
    try:
        spine.start(ADAPTERS)
        started = spine.pids()
        users.start(rate)
        time.sleep(before)
        try:
            scenario.fault(ctx)
        except AssertionError as e:
            errors.append(str(e))
        healed = time.monotonic()
        probe = users.probe()
        try:
            wait_for(
                "a record written after the fault to reach every CRM",
                lambda: visible_everywhere(spine.dbs, probe),
                settle,
                spine,
            )
            recovery = time.monotonic() - healed
        except AssertionError as e:
            errors.append(str(e))
            ctx.notes.append(_queues(ctx))
            settle = 10.0  # judge what is there now; waiting longer changes nothing
        time.sleep(after)
        users.stop()
        mapped = {name: EDITED for name in CRMS}
        # Settled: the checker is satisfied, or the CRMs stopped changing for a while.
        deadline = time.monotonic() + settle
        while time.monotonic() < deadline:
            verdict = check(users.writes, snapshot(spine.dbs), mapped)
            if verdict.clean:
                break
            spine.fleet.check()
            time.sleep(1.0)
        verdicts = spine.wait_quiet()
        same_router = spine.pids().get("router") == started.get("router")
        accepted = verdicts.get("accepted", 0) if same_router else None
        verdict = check(users.writes, snapshot(spine.dbs), mapped, accepted)
        changed = {
            n
            for n, pid in spine.pids().items()
            if started.get(n) != pid and n not in spine.restarts
        }
        if changed:
            errors.append(f"daemons replaced without a supervisor: {sorted(changed)}")
        dead = drain_dead_letters(url, list(ADAPTERS))
    except AssertionError as e:
        errors.append(str(e))
    except Exception as e:  # a scenario that broke the harness is a failing row, not a crash
        errors.append(f"{type(e).__name__}: {e}")
    finally:
        users.stop()
        codes = spine.stop()
        if proxy is not None:
            proxy.close()
        if node is not None:
            node.close()
    unclean = {n: c for n, c in codes.items() if c != 0}
    if unclean:
        errors.append(f"unclean exits: {unclean}")
    problems = dlq_problems(dead)
    if len(dead) != ctx.expected_dead:
        problems.append(f"{len(dead)} dead-lettered entries, expected {ctx.expected_dead}")
    notes = [*ctx.notes, *(f"{k} {v}" for k, v in ctx.figures.items()), *_retries(workdir)]
    if users.refused:
        notes.append(f"{users.refused} user writes refused by a locked CRM")
    return Outcome(
        scenario.name,
        len(users.writes),
        verdict,
        len(dead),
        problems,
        recovery,
        dict(spine.restarts),
        notes,
        "; ".join(errors) or None,
    )
