"""Compare two CRMs' records through the id map, in bounded memory (pure).

Each side is a stream of digests sorted by ``record_id`` — ``(record_id, source id, hash
| None | "invalid", state)`` pages from the adapters — and the comparison is a merge of
the two streams: it holds one page of each, whatever the number of records, and yields
only what differs. A record is *present* on a side when its row exists there and is
not deleted; a record absent on both sides (a tombstone everywhere) is equal.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal

INVALID = "invalid"

Kind = Literal["missing_in_a", "missing_in_b", "different", "unmigratable"]


@dataclass(frozen=True)
class Digest:
    record_id: str
    source_record_id: str | None
    hash: str | None  # None: no row; "invalid": the row breaks the canonical model

    @property
    def present(self) -> bool:
        return self.hash is not None


@dataclass(frozen=True)
class Drift:
    kind: Kind
    record_id: str
    a: Digest | None
    b: Digest | None


@dataclass
class Tally:
    compared: int = 0
    equal: int = 0
    missing_in_a: int = 0
    missing_in_b: int = 0
    different: int = 0
    unmigratable: int = 0
    ids: dict[str, list[str]] = field(default_factory=dict)

    def add(self, drift: Drift, keep_ids: int) -> None:
        setattr(self, drift.kind, getattr(self, drift.kind) + 1)
        listed = self.ids.setdefault(drift.kind, [])
        if len(listed) < keep_ids:
            listed.append(drift.record_id)

    @property
    def drift(self) -> int:
        return self.missing_in_a + self.missing_in_b + self.different


def _judge(a: Digest | None, b: Digest | None, skip: set[str]) -> Drift | None:
    record_id = (a or b).record_id  # type: ignore[union-attr]
    if record_id in skip or INVALID in ((a.hash if a else None), (b.hash if b else None)):
        return Drift("unmigratable", record_id, a, b)
    a_here = a is not None and a.present
    b_here = b is not None and b.present
    if not a_here and not b_here:
        return None
    if not b_here:
        return Drift("missing_in_b", record_id, a, b)
    if not a_here:
        return Drift("missing_in_a", record_id, a, b)
    assert a is not None and b is not None
    return None if a.hash == b.hash else Drift("different", record_id, a, b)


async def merge(
    a: AsyncIterator[Digest],
    b: AsyncIterator[Digest],
    skip: set[str] | None = None,
    only_a: bool = False,
) -> AsyncIterator[tuple[Drift | None, Digest | None, Digest | None]]:
    """Walk both sorted streams; for each record id, the drift (None: equal) and the two
    sides. ``skip``: records that cannot migrate (reported as unmigratable). ``only_a``:
    records B holds that A never had are not compared (a migration from A)."""
    skip = skip or set()
    x, y = await anext(a, None), await anext(b, None)
    while x is not None or y is not None:
        if y is None or (x is not None and x.record_id < y.record_id):
            pair: tuple[Digest | None, Digest | None] = (x, None)
            x = await anext(a, None)
        elif x is None or y.record_id < x.record_id:
            pair = (None, y)
            y = await anext(b, None)
            if only_a:
                continue
        else:
            pair = (x, y)
            x, y = await anext(a, None), await anext(b, None)
        yield _judge(pair[0], pair[1], skip), pair[0], pair[1]


async def tally(
    pairs: AsyncIterator[tuple[Drift | None, Digest | None, Digest | None]], keep_ids: int = 1000
) -> Tally:
    out = Tally()
    async for drift, _, _ in pairs:
        out.compared += 1
        if drift is None:
            out.equal += 1
        else:
            out.add(drift, keep_ids)
    return out
