"""Rows capture skips: why (without values), counted once per version, logged by id.

A row that cannot become an event (the model refuses a value, an id too long for the
wire, a counter that would overflow, a value the links table cannot hold) is skipped so
the rest of its entity keeps flowing; the count goes into the heartbeat and
``crmsync status``, the id into the log. Values never do: they are customers' data.
"""

from __future__ import annotations

import logging

from pydantic import ValidationError

from adapters.base import SourceRow
from adapters.canonical import InvalidRecord
from router.logs import kv

REPORTED_MAX = 10_000  # versions of bad rows remembered, so each is counted once
ID_SHOWN = 255  # characters of an id put in the log (an overlong id is itself the fault)


def why(err: Exception) -> str:
    """What went wrong with a row, without its values (pydantic's text quotes them)."""
    if isinstance(err, InvalidRecord):
        return str(err)
    if isinstance(err, ValidationError):
        first = err.errors()[0]
        return f"{'.'.join(map(str, first['loc']))}: {first['type']}"
    cause = getattr(err.__cause__, "orig", None) or err.__cause__
    return type(cause).__name__ if cause is not None else type(err).__name__


class BadRows:
    def __init__(self, adapter: str, log: logging.Logger) -> None:
        self.adapter = adapter
        self.log = log
        self.count = 0
        self._reported: set[tuple[str, str, str]] = set()

    def report(self, row: SourceRow, reason: str) -> None:
        sid = row.source_record_id[:ID_SHOWN]
        key = (row.entity, sid, str(row.version))
        if key in self._reported:
            return  # the overlap window re-reads rows: report and count each version once
        if len(self._reported) >= REPORTED_MAX:
            self._reported.clear()  # bounded memory; a bad row may then count twice
        self._reported.add(key)
        self.count += 1
        self.log.warning(
            "source row skipped, not published",
            extra=kv(adapter=self.adapter, entity=row.entity, source_record_id=sid, reason=reason),
        )
