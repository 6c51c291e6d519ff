"""Structured logs: one event per line, ``key=value`` pairs after the message.

Fields travel in ``extra={"kv": {...}}``; only ids and counts belong there at INFO,
never field values of customer records and never secrets.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any


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


def _quote(value: str) -> str:
    if not value or any(c in value for c in ' ="'):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return value


def configure(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LogfmtFormatter())
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
