"""A synchronous HubSpot API client: the bearer token, the request budget, retries, and
every failure classified for the SDK's retry tiers.

* 429 and 5xx (and connection errors, timeouts) are retried here with back-off that
  honours ``Retry-After`` and the rate-limit headers; still failing, they are
  :class:`~router.errors.TransientWriteError` (the sink's tiers retry later, nothing is
  dead-lettered for a busy server).
* 400 and other 4xx are :class:`~router.errors.PermanentWriteError`; 401/403 say which key
  to check. 409 is data (a create of an existing email: the caller links the contact).

The token is read once from ``api.token_file`` and only ever sent in the header: it is
in no message, log or exception.
"""

from __future__ import annotations

import logging
import stat
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from adapters.hubspot import usage
from adapters.hubspot.limiter import DailyCapReached, RequestLimiter
from router.config import parse_duration
from router.errors import ConfigError, PermanentWriteError, TransientWriteError
from router.logs import kv

MAX_ATTEMPTS = 6
BACKOFF_S = 0.25  # first pause after a 5xx or a dropped connection; doubles, capped
BACKOFF_CAP_S = 10.0


def read_token(path: Path, where: str) -> str:
    """The private-app token from ``path``: present, not empty, not world-readable."""
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8").strip()
    except OSError as e:
        raise ConfigError(f"{where}: api.token_file cannot be read ({e.strerror})") from None
    if mode & stat.S_IROTH:
        raise ConfigError(
            f"{where}: api.token_file is readable by every user; chmod 600 it (a token is a "
            "password)"
        )
    if not text:
        raise ConfigError(f"{where}: api.token_file is empty")
    return text


@dataclass(frozen=True)
class Answer:
    """A response the caller acts on: 2xx, or a 409 it asked to see."""

    status: int
    body: Any  # parsed JSON, or None (204)


def _retry_after(headers: Mapping[str, str]) -> float | None:
    raw = headers.get("retry-after")
    try:
        return None if raw is None else max(0.0, float(raw))
    except ValueError:
        return None  # an HTTP date: fall back on the rate-limit interval


def _error(status: int, body: Any) -> tuple[str, str]:
    """(category, message) of a HubSpot error body; the message is HubSpot's own."""
    if isinstance(body, dict):
        category = str(body.get("category") or body.get("errorType") or "ERROR")
        return category, str(body.get("message") or "")[:300]
    return "ERROR", ""


class HubspotClient:
    def __init__(
        self,
        base_url: str,
        token: str,
        limiter: RequestLimiter,
        *,
        timeout: float | str = 30.0,
        sleep: Callable[[float], None] = time.sleep,
        max_attempts: int = MAX_ATTEMPTS,
        transport: httpx.BaseTransport | None = None,
        adapter: str = "hubspot",
    ) -> None:
        self.adapter = adapter
        self.log = logging.getLogger(f"crmsync.adapter.{adapter}")
        seconds = parse_duration(timeout) if isinstance(timeout, str) else timeout
        self.limiter = limiter
        self._sleep = sleep
        self._max_attempts = max_attempts
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            timeout=seconds,
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            transport=transport,
        )
        self.retries = 0  # requests sent again after a 429, 5xx or dropped connection

    def close(self) -> None:
        self._http.close()

    def get(self, path: str, params: Mapping[str, Any] | None = None) -> Answer:
        return self.request("GET", path, params=params)

    def post(self, path: str, body: Any, *, conflict_ok: bool = False) -> Answer:
        return self.request("POST", path, body=body, conflict_ok=conflict_ok)

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, Any] | None = None,
        conflict_ok: bool = False,
    ) -> Answer:
        """Send one request through the limiter, retrying what a wait can fix."""
        pause = BACKOFF_S
        why = ""
        for attempt in range(1, self._max_attempts + 1):
            self.limiter.acquire()
            status: int | None = None
            try:
                resp = self._http.request(method, path, json=body, params=params)
            except httpx.TransportError as e:
                usage.REQUESTS.labels(self.adapter, usage.outcome(None)).inc()
                why = f"{type(e).__name__} talking to HubSpot"
                wait = pause
            else:
                self.limiter.observe(resp.headers)
                status = resp.status_code
                usage.REQUESTS.labels(self.adapter, usage.outcome(status)).inc()
                if status < 300 or (status == 409 and conflict_ok):
                    return Answer(status, resp.json() if resp.content else None)
                parsed = _json(resp)
                category, message = _error(status, parsed)
                if status == 429:
                    policy = parsed.get("policyName") if isinstance(parsed, dict) else None
                    if policy == "DAILY":
                        self.limiter.day_spent()  # nothing more today, from any caller
                        raise DailyCapReached("HubSpot 429 DAILY: daily request cap reached")
                    wait = _retry_after(resp.headers) or _interval(resp.headers)
                    # The budget holds the retry (and every other request) that long.
                    self.limiter.back_off(wait)
                    why = f"HubSpot 429 {policy or category}"
                elif status >= 500:
                    wait = max(pause, _retry_after(resp.headers) or 0.0)
                    why = f"HubSpot {status} {category}"
                elif status in (401, 403):
                    raise PermanentWriteError(
                        f"HubSpot {status} {category}: the token was refused; check "
                        "api.token_file (a private-app token with the crm.objects scopes)"
                    )
                else:
                    raise refused(f"HubSpot {status} {category}: {message}", category)
            if attempt == self._max_attempts:
                break
            self.retries += 1
            self.log.info(
                "hubspot request retried",
                extra=kv(method=method, path=path, attempt=attempt, reason=why, wait_s=wait),
            )
            if status != 429:
                self._sleep(wait)  # a 429's wait is the limiter's, for every caller
            pause = min(pause * 2, BACKOFF_CAP_S)
        raise TransientWriteError(f"{why} (gave up after {self._max_attempts} attempts)")


def refused(message: str, category: str) -> PermanentWriteError:
    """A permanent error whose message is HubSpot's own text, which may quote the value
    it refused ("Email address ... is invalid"): that text goes to the DLQ header, logs
    get the category only (``log_text``, which logs show instead of the message)."""
    return PermanentWriteError(message, log_text=f"HubSpot {category}")


def _interval(headers: Mapping[str, str]) -> float:
    """How long a throttled client waits without Retry-After: one rate-limit interval
    (HubSpot's window is rolling, so a slot frees within it)."""
    raw = headers.get("x-hubspot-ratelimit-interval-milliseconds")
    try:
        return max(0.1, int(raw) / 1000) if raw else 1.0
    except ValueError:
        return 1.0


def _json(resp: httpx.Response) -> Any:
    try:
        return resp.json() if resp.content else None
    except ValueError:
        return None
