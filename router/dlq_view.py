"""Dead-letter entries as operators see them: grouped by error, and presented as data.

Pure, like :mod:`router.dlq`: the ``crmsync dlq`` commands render these values as tables
(``router/cli/render_dlq.py``) or JSON.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from router.dlq import Entry, GroupBy

# -- groups -------------------------------------------------------------------------------

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_HEX = re.compile(r"\b(?:0x)?(?=[0-9a-f]*\d)[0-9a-f]{8,}\b", re.I)
_NUMBER = re.compile(r"(?<![A-Za-z_])[-+]?\d+(?:\.\d+)?")


def normalize_error(text: str) -> str:
    """The message with what varies per record (ids, e-mails, numbers) blanked, so that
    the same failure of many records forms one group (as ServicePulse's failure groups).
    Quoted names are kept: they name the constraint or column that failed."""
    text = _UUID.sub("<id>", text)
    text = _EMAIL.sub("<email>", text)
    text = _HEX.sub("<id>", text)
    text = _NUMBER.sub("<n>", text)
    return " ".join(text.split())


@dataclass(frozen=True)
class Group:
    key: str
    entries: tuple[Entry, ...]

    @property
    def oldest_failed_at(self) -> float | None:
        times = [t for t in (e.failed_at for e in self.entries) if t is not None]
        return min(times) if times else None

    def oldest_age(self, now: float) -> float | None:
        oldest = self.oldest_failed_at
        return None if oldest is None else max(0.0, now - oldest)


def group_key(entry: Entry, by: GroupBy) -> str:
    if by == "entity":
        return entry.entity or "(undecodable)"
    if by == "adapter":
        return entry.adapter
    return f"{entry.error_type}: {normalize_error(entry.error)}"


def group(entries: Iterable[Entry], by: GroupBy = "error") -> list[Group]:
    """Groups, largest first; ties in the order their first entry appears."""
    buckets: dict[str, list[Entry]] = {}
    for entry in entries:
        buckets.setdefault(group_key(entry, by), []).append(entry)
    ordered = sorted(buckets.items(), key=lambda item: -len(item[1]))  # stable
    return [Group(key, tuple(members)) for key, members in ordered]


# -- presenting ---------------------------------------------------------------------------


def jsonable(value: Any) -> Any:
    """Header values as JSON: times as ISO 8601, raw bytes as ``{"base64": ...}``."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, bytes):
        return {"base64": base64.b64encode(value).decode()}
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float | str):
        return value
    return str(value)


def summary(entry: Entry) -> dict[str, Any]:
    """One line of ``dlq list --json``. Times are absolute (epoch seconds), so listing a
    queue twice gives the same output."""
    return {
        "id": entry.id,
        "queue": entry.queue,
        "position": entry.position,
        "adapter": entry.adapter,
        "entity": entry.entity,
        "record_id": entry.record_id,
        "op": entry.event.op if entry.event else None,
        "attempts": entry.attempts,
        "error_type": entry.error_type,
        "error": entry.error,
        "first_failed_at": entry.first_failed_at,
        "last_failed_at": entry.last_failed_at,
        "decodes": entry.event is not None,
    }


def detail(entry: Entry) -> dict[str, Any]:
    """Everything about one entry: ``dlq show --json`` and each line of ``dlq export``."""
    return {
        **summary(entry),
        "traceback": entry.traceback,
        "headers": jsonable(entry.headers),
        "event": entry.event.model_dump(mode="json") if entry.event else None,
        "decode_error": entry.decode_error,
        "body_base64": None if entry.event else base64.b64encode(entry.body).decode(),
    }


def age_text(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"
