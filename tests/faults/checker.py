"""The fault suite's oracle: what the users wrote, in order, against what every CRM holds.

Pure values in, a :class:`Verdict` out. The workload only makes *causal* edits (a user
edits a record only when their CRM already shows its latest values, as a person looking
at the screen would), so every record has exactly one correct final state: the fold of
its writes in the order they were made. Against that, for each CRM:

* **lost**: a record (or its delete) that should be there and is not, or a field holding
  a value no user ever wrote for that record;
* **duplicated**: a record present more than once, a record nobody created, or more
  accepted changes at the router than users made (an effect applied twice);
* **stale**: a field holding a value that was overwritten later (an older write won).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from router import topology

Op = Literal["insert", "update", "delete"]


@dataclass(frozen=True)
class Write:
    """One user change in one CRM; ``seq`` is its place in the global order."""

    seq: int
    crm: str
    key: str  # the record's identity across CRMs (the email, never changed)
    op: Op
    fields: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Row:
    """A live row as a CRM holds it (soft-deleted rows are not live)."""

    key: str
    fields: Mapping[str, str | None]


@dataclass
class Verdict:
    lost: int = 0
    duplicated: int = 0
    stale: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return self.lost == self.duplicated == self.stale == 0

    def add(self, kind: Literal["lost", "duplicated", "stale"], why: str) -> None:
        setattr(self, kind, getattr(self, kind) + 1)
        if len(self.problems) < 20:  # enough to see the pattern; ids only
            self.problems.append(f"{kind}: {why}")


@dataclass(frozen=True)
class Expected:
    alive: bool
    fields: Mapping[str, str]
    history: Mapping[str, frozenset[str]]  # every value a field was ever given


def fold(writes: Iterable[Write]) -> dict[str, Expected]:
    """Each record's final state, from its writes in ``seq`` order."""
    state: dict[str, dict[str, str]] = {}
    alive: dict[str, bool] = {}
    seen: dict[str, dict[str, set[str]]] = {}
    for w in sorted(writes, key=lambda w: w.seq):
        if w.op == "delete":
            alive[w.key] = False
            continue
        if w.op == "insert":
            state[w.key] = {}
        alive[w.key] = True
        state.setdefault(w.key, {}).update(w.fields)
        for name, value in w.fields.items():
            seen.setdefault(w.key, {}).setdefault(name, set()).add(value)
    return {
        key: Expected(
            alive[key],
            dict(state.get(key, {})),
            {n: frozenset(v) for n, v in seen.get(key, {}).items()},
        )
        for key in alive
    }


def check(
    writes: Sequence[Write],
    crms: Mapping[str, Sequence[Row]],
    mapped: Mapping[str, Iterable[str]],
    accepted: int | None = None,
) -> Verdict:
    """Compare every CRM's rows with the users' history. ``mapped`` names the fields
    each CRM syncs; ``accepted`` is the router's accepted-verdict count when it is known
    for the whole run (one router process), else None."""
    verdict = Verdict()
    expected = fold(writes)
    for crm, rows in crms.items():
        fields = set(mapped[crm])
        by_key = Counter(r.key for r in rows)
        for key, n in by_key.items():
            if key not in expected:
                verdict.add("duplicated", f"{crm} holds {key}, which no user created")
            elif n > 1:
                verdict.add("duplicated", f"{crm} holds {key} {n} times")
        held = {r.key: r for r in rows}
        for key, want in expected.items():
            row = held.get(key)
            if not want.alive:
                if row is not None:
                    verdict.add("lost", f"the delete of {key} never reached {crm}")
                continue
            if row is None:
                verdict.add("lost", f"{key} missing in {crm}")
                continue
            for name in sorted(fields & set(want.fields)):
                got = row.fields.get(name)
                if got == want.fields[name]:
                    continue
                if got in want.history.get(name, frozenset()):
                    verdict.add("stale", f"{crm} {key}.{name} holds an overwritten value")
                else:
                    verdict.add("lost", f"{crm} {key}.{name} holds a value nobody wrote last")
    if accepted is not None:
        # Two quick edits may leave as one event, so fewer is fine; more is not.
        for _ in range(max(0, accepted - len(writes))):
            verdict.add("duplicated", f"router accepted {accepted} changes for {len(writes)}")
    return verdict


# What a dead-lettered entry must carry to be understood (DESIGN "Headers on a
# dead-lettered message"): a refusal says why, a failed write says where and how.
DLQ_HEADERS = (
    topology.TARGET_HEADER,
    topology.ATTEMPTS_HEADER,
    topology.ERROR_TYPE_HEADER,
    topology.FIRST_FAILED_HEADER,
    topology.LAST_FAILED_HEADER,
)


def dlq_problems(entries: Iterable[tuple[str, Mapping[str, object]]]) -> list[str]:
    """Entries (queue, headers) missing their metadata, one line each."""
    problems = []
    for queue, headers in entries:
        if queue == topology.INVALID:
            # Refused by the router (reason header) or dead-lettered by the broker from
            # the ingress (x-death): either says why it is there.
            if topology.REASON_HEADER not in headers and "x-death" not in headers:
                problems.append(f"{queue}: entry without {topology.REASON_HEADER} or x-death")
            continue
        missing = [h for h in DLQ_HEADERS if h not in headers]
        if missing:
            problems.append(f"{queue}: entry without {', '.join(missing)}")
    return problems
