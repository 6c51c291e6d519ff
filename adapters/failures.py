"""What happens to a delivery an adapter could not write: retry later, or dead-letter.

Pure: given the message's history headers, the error and the retry tiers, decide the
next hop and the headers it carries. The history lives in crmsync's own ``x-crmsync-*``
headers (the broker's ``x-death`` and delivery count also rise when a consumer crashes,
so they cannot tell our failures apart from a crash loop).
"""

from __future__ import annotations

import random
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from router import topology
from router.errors import PermanentWriteError, WriteError

ERROR_LIMIT = 500


@dataclass(frozen=True)
class Hop:
    """Where a failed delivery goes next."""

    exchange: str
    routing_key: str
    headers: dict[str, Any]
    expiration: float | None  # seconds, for a retry tier
    dead: bool


def history(headers: Mapping[str, Any] | None) -> dict[str, Any]:
    """The headers worth carrying on: crmsync's own and the record key; never the broker's
    ``x-death``/``x-delivery-count`` or other ``x-*`` (DESIGN "Known traps")."""
    kept: dict[str, Any] = {}
    for key, value in (headers or {}).items():
        if (
            key.startswith("x-crmsync-")
            or key == topology.RECORD_KEY_HEADER
            or (not key.startswith("x-") and key != "BCC")
        ):
            kept[key] = value
    return kept


def error_type(err: BaseException | None) -> str:
    return "permanent" if isinstance(err, PermanentWriteError) else "transient"


def describe(err: BaseException) -> tuple[str, str]:
    """(one-line error, bounded traceback)."""
    # crmsync's own write errors already name the cause ("IntegrityError: CHECK ...");
    # their class is what x-crmsync-error-type says.
    text = str(err) if isinstance(err, WriteError) else f"{type(err).__name__}: {err}"
    line = text.replace("\n", " ")[:ERROR_LIMIT]
    # The frames say where; a huge message must not push them out of the bound.
    frames = "".join(traceback.format_tb(err.__traceback__))
    budget = topology.TRACEBACK_LIMIT - len(line) - 40
    tb = "Traceback (most recent call last):\n" + frames[-budget:] + line
    return line, tb[: topology.TRACEBACK_LIMIT]


def next_hop(
    adapter: str,
    headers: Mapping[str, Any] | None,
    err: BaseException,
    delays: Sequence[tuple[str, float]],
    kind: str | None = None,
    now: float | None = None,
    rng: random.Random | None = None,
) -> Hop:
    """The retry tier for attempt N, or the DLQ once the tiers are used up or the error is
    permanent. ``delays`` are (label, seconds) in order; ``kind`` overrides the error type
    (e.g. ``undecodable``)."""
    now = time.time() if now is None else now
    stamp = int(now * 1000)  # epoch ms: exact in every AMQP client (see topology)
    kept = history(headers)
    attempts = int(kept.get(topology.ATTEMPTS_HEADER, 0)) + 1
    line, tb = describe(err)
    kind = kind or error_type(err)
    kept.update(
        {
            topology.TARGET_HEADER: adapter,
            topology.ATTEMPTS_HEADER: attempts,
            topology.ERROR_TYPE_HEADER: kind,
            topology.ERROR_HEADER: line,
            topology.TRACEBACK_HEADER: tb,
            topology.LAST_FAILED_HEADER: stamp,
        }
    )
    kept.setdefault(topology.FIRST_FAILED_HEADER, stamp)
    if kind == "transient" and attempts <= len(delays):
        label, seconds = delays[attempts - 1]
        # Upward only: a write keeps retrying at least the sum of the configured delays
        # (the "retry budget" operators plan outages against).
        jitter = 1.0 + (rng or random).random() * topology.RETRY_JITTER
        key = topology.retry_key(adapter, label)
        return Hop(topology.RETRY, key, kept, seconds * jitter, False)
    return Hop(topology.RETRY, topology.dead_key(adapter), kept, None, True)


def error_for_status(status: int, detail: str) -> Exception:
    """The write error an HTTP-based adapter raises for a response status: rate limits
    (429), timeouts (408) and server errors (5xx) are worth retrying; any other 4xx is a
    request the CRM will refuse again."""
    from router.errors import TransientWriteError

    message = f"HTTP {status}: {detail}"
    if status in (408, 425, 429) or status >= 500:
        return TransientWriteError(message)
    if 400 <= status < 500:
        return PermanentWriteError(message)
    raise ValueError(f"HTTP {status} is not an error status")
