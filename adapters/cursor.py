"""Where capture reads from, and how far its cursor may move: pure, values in and out.

The cursor is a position in capture order (a typed ``updated_at``); each poll reads from
one overlap behind it. The cursor never passes the *limit*: the CRM database's own clock,
and on PostgreSQL the start of the oldest transaction still open there (whose rows carry
stamps from its start) plus the overlap. So a poll never starts reading later than the
database's now() less the overlap, nor after an open transaction's start. Rows stamped in
the future therefore never drag the cursor past edits still to come: they are re-read
each poll until time passes them, and echo detection makes each re-read a no-op.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any


@dataclass(frozen=True)
class Horizon:
    """What the database said when a capture pass began (positions' type)."""

    now: Any  # its clock; None: no arithmetic on this column (text), keep no cursor
    oldest_open: Any = None  # start of the oldest other open transaction, where known


def earlier(position: Any, seconds: float) -> Any:
    """``position`` moved back by ``seconds``, for whatever type the cursor is."""
    if position is None:
        return None
    if isinstance(position, datetime):
        return position - timedelta(seconds=seconds)
    if isinstance(position, (int, float)) and not isinstance(position, bool):
        return position - seconds
    return None  # opaque text: no arithmetic, so no window either: read from the start


def since(cursor: Any, overlap: float) -> Any:
    """Where a poll starts reading: one overlap behind the cursor."""
    return earlier(cursor, overlap)


def limit(horizon: Horizon, overlap: float) -> Any:
    """The furthest the cursor may move in this pass (None: keep no cursor): reads then
    start at most at the database's now() less the overlap, and no later than the start
    of its oldest open transaction."""
    if earlier(horizon.now, overlap) is None:
        return None
    if horizon.oldest_open is None:
        return horizon.now
    return _min(horizon.now, earlier(horizon.oldest_open, -overlap))


def advance(old: Any, newest_seen: Any, bound: Any) -> Any:
    """The cursor after a pass (or page) that saw rows up to ``newest_seen`` (None: none).

    Never past ``bound``; never backwards while the old cursor is within it; an old
    cursor beyond it (saved by a version that followed future stamps) comes back to it.
    """
    if bound is None:
        return None
    if newest_seen is None:
        return None if old is None else _min(old, bound)
    moved = _min(newest_seen, bound)
    if old is None:
        return moved
    try:
        return old if moved < old <= bound else moved
    except TypeError:  # a cursor of another type (the column changed): start afresh
        return moved


def hold(bound: Any, held: Any) -> Any:
    """``bound`` lowered to ``held``, the position of a row a pass left for later (None:
    nothing held). A bound of None stays None: such a capture keeps no cursor at all."""
    if bound is None or held is None:
        return bound
    return _min(bound, held)


def _min(a: Any, b: Any) -> Any:
    try:
        return b if b < a else a
    except TypeError:
        return b
