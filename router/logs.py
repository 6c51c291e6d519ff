"""Structured logs: one event per line, as ``key=value`` pairs on a terminal and as JSON
objects otherwise (journald, supervisor's files, a pipe into a log shipper), or as
``CRMSYNC_LOG_FORMAT`` (``json`` | ``logfmt``) says. Both carry the same fields.

Fields travel in ``extra={"kv": {...}}``; only ids and counts belong there at INFO,
never field values of customer records and never secrets.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any

LOG_FORMAT_ENV = "CRMSYNC_LOG_FORMAT"


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        parts = [
            f"{stamp}.{int(record.msecs):03d}Z",
            f"level={record.levelname.lower()}",
            f"logger={record.name}",
            f"event={_quote(record.getMessage())}",
        ]
        kv: dict[str, Any] = getattr(record, "kv", {}) or {}
        parts.extend(f"{k}={_quote(str(v))}" for k, v in kv.items())
        line = " ".join(parts)
        if record.exc_info:
            line += " exc=" + _quote(self.formatException(record.exc_info).replace("\n", " | "))
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``event``, the ``kv``
    fields, and ``exc`` (the traceback) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        out: dict[str, Any] = {
            "ts": f"{stamp}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        kv: dict[str, Any] = getattr(record, "kv", {}) or {}
        # The record's own keys win: a field named "event" cannot hide the message.
        out.update({k: v for k, v in kv.items() if k not in out})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def formatter_for(stream: Any) -> logging.Formatter:
    """JSON unless ``stream`` is a terminal (or ``CRMSYNC_LOG_FORMAT`` says otherwise)."""
    chosen = os.environ.get(LOG_FORMAT_ENV, "").strip().lower()
    if chosen == "json":
        return JsonFormatter()
    if chosen == "logfmt":
        return LogfmtFormatter()
    isatty = getattr(stream, "isatty", None)
    return LogfmtFormatter() if isatty is not None and isatty() else JsonFormatter()


def _quote(value: str) -> str:
    if not value or any(c in value for c in ' ="'):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return value


def configure(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter_for(sys.stderr))
    root = logging.getLogger("crmsync")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
    quiet_libraries()


def quiet_libraries() -> None:
    """aio-pika/aiormq log connection failures with tracebacks (and, with no handler
    configured, through Python's last-resort handler). crmsync reports them itself, as
    one line: a typed error for commands, a log event for daemons."""
    for name in ("aio_pika", "aiormq"):
        logging.getLogger(name).setLevel(logging.CRITICAL + 1)


def error_text(err: BaseException) -> str:
    """An error as logs may show it: a write error's value-free ``log_text`` (a CRM's
    own error text may quote the record's values), else its message."""
    text = getattr(err, "log_text", None)
    return text if isinstance(text, str) else str(err)


def kv(**fields: Any) -> dict[str, Any]:
    """``logger.info("accepted", extra=kv(event_id=..., record_id=...))``."""
    return {"kv": fields}
