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
import hashlib
from collections.abc import Mapping

import msgpack

from router.clock import Order, VectorClock, compare
from router.events import Scalar


def content_hash(fields: Mapping[str, Scalar], deleted: bool) -> str:
    """Hash of the mapped content; the same content hashes the same whatever the key order."""
    packed = msgpack.packb([sorted(fields.items()), deleted], use_bin_type=True)
    return hashlib.sha256(packed).hexdigest()[:32]


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
