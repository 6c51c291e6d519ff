"""The adapter's own decisions, pure: publish a captured row? apply a delivery?

* A captured row whose content hash equals the link's is an echo of what we wrote (or
  a re-read): nothing to publish. Otherwise it is a local change, with the link's clock
  and our own counter + 1.
* A delivery whose clock is before or equal to the link's is a duplicate or a replay
  of something superseded: skip. One concurrent with our clock is skipped too: our own
  change is (or will be) at the router, which resolves and sends a version dominating
  both. Only a delivery *after* our clock is written.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from router.clock import Order, VectorClock, compare
from router.events import Scalar

# Re-exported: defined in the router, whose anti-entropy must hash exactly as adapters do.
from router.hashing import content_hash as content_hash


class DeliveryAction(enum.Enum):
    APPLY = "apply"
    SKIP_STALE = "skip-stale"
    SKIP_CONCURRENT = "skip-concurrent"


def delivery_action(delivered: VectorClock, known: VectorClock | None) -> DeliveryAction:
    if known is None:
        return DeliveryAction.APPLY
    order = compare(delivered, known)
    if order is Order.AFTER:
        return DeliveryAction.APPLY
    if order is Order.CONCURRENT:
        return DeliveryAction.SKIP_CONCURRENT
    return DeliveryAction.SKIP_STALE


def local_clock(known: VectorClock | None, actor: str) -> VectorClock:
    """The clock of a local change made on top of what we last applied or emitted."""
    return (known or VectorClock()).increment(actor)


def changed_fields(before: Mapping[str, Scalar] | None, after: Mapping[str, Scalar]) -> list[str]:
    if before is None:
        return sorted(after)
    return sorted(
        name for name, value in after.items() if name not in before or before[name] != value
    )


@dataclass(frozen=True)
class FieldVersions:
    """Per field, the counter of ``actor``'s edit that last set the value the link holds
    (DESIGN "Exact attribution under reordering"). A field absent from ``counters`` holds
    a value received from the hub: every delivery is in the past of the router's state,
    so the router has seen that value already and needs no counter for it. A link
    without one (``None``) does not know (written by an older version, or by another
    epoch of this adapter): its events carry none and the router bounds instead."""

    actor: str
    counters: Mapping[str, int]

    def for_event(self, actor: str) -> dict[str, int] | None:
        """The event's ``field_versions``; None when these counters are another actor's
        (an earlier epoch): read as this one's, they would name the wrong edits."""
        return dict(self.counters) if actor == self.actor else None


def versions_after_change(
    known: FieldVersions | None,
    new_link: bool,
    changed: Sequence[str],
    fields: Mapping[str, Scalar],
    clock: VectorClock,
    actor: str,
) -> FieldVersions | None:
    """The field versions of a local change at ``clock``: the changed fields were set by
    this edit, the others keep what the link knew. Unknown stays unknown."""
    if not new_link and (known is None or known.actor != actor):
        return None
    counter = clock.get(actor)
    kept = {n: v for n, v in known.counters.items() if n in fields} if known else {}
    return FieldVersions(actor, {**kept, **dict.fromkeys(changed, counter)})


def versions_after_delivery(
    known: FieldVersions | None,
    before: Mapping[str, Scalar],
    after: Mapping[str, Scalar],
    actor: str,
) -> FieldVersions:
    """The field versions once a delivery is written: a value it changed is the hub's
    (received; no counter of ours set it), one it left alone keeps its counter. A
    delivery is only applied when it is after the link's clock, so the router has seen
    every edit of ours the link knew of: an unknown link becomes known here."""
    if known is None or known.actor != actor:
        return FieldVersions(actor, {})
    return FieldVersions(
        actor,
        {
            n: v
            for n, v in known.counters.items()
            if n in after and n in before and before[n] == after[n]
        },
    )
