"""A local HubSpot CRM v3 contacts server for tests (issue 12, item 6).

`with hubspot_server(per_10s=100, daily=250_000, lag=0.5) as hs:` runs a stdlib
ThreadingHTTPServer on 127.0.0.1 (a free port) until the block ends; `hs.base_url` is
what an adapter's `[api] base_url` points at and `hs.token` its bearer token.

Rate limits follow HubSpot's usage docs: a rolling 10-second window
(`TEN_SECONDLY_ROLLING`) and a daily cap (`DAILY`); every authorised response carries
X-HubSpot-RateLimit-Max / -Remaining / -Interval-Milliseconds / -Daily /
-Daily-Remaining; over a limit the answer is 429 with the documented JSON body. A
throttled request is not counted against the window (it did no work), so a client that
backs off recovers once the window rolls.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.fakes import hubspot_ops as ops
from tests.fakes.hubspot_store import ApiError, Contact, Store

WINDOW_S = 10.0
CONTACTS = "/crm/v3/objects/contacts"
POSTS: dict[str, Callable[[Store, Any], ops.Response]] = {
    f"{CONTACTS}/search": ops.search,
    f"{CONTACTS}/batch/create": ops.batch_create,
    f"{CONTACTS}/batch/update": ops.batch_update,
    f"{CONTACTS}/batch/upsert": ops.batch_upsert,
    f"{CONTACTS}/batch/archive": ops.batch_archive,
    f"{CONTACTS}/batch/read": ops.batch_read,
}


@dataclass
class RateLimits:
    """HubSpot's two policies: a rolling 10 s window and a daily cap."""

    per_10s: int
    daily: int
    clock: Callable[[], float]
    window: deque[float] = field(default_factory=deque)
    used_today: int = 0

    def take(self) -> tuple[str | None, dict[str, str]]:
        """Count one request; returns (policy hit or None, rate-limit headers)."""
        now = self.clock()
        while self.window and self.window[0] <= now - WINDOW_S:
            self.window.popleft()
        policy = None
        if self.used_today >= self.daily:
            policy = "DAILY"
        elif len(self.window) >= self.per_10s:
            policy = "TEN_SECONDLY_ROLLING"
        else:
            self.window.append(now)
            self.used_today += 1
        return policy, {
            "X-HubSpot-RateLimit-Max": str(self.per_10s),
            "X-HubSpot-RateLimit-Remaining": str(self.per_10s - len(self.window)),
            "X-HubSpot-RateLimit-Interval-Milliseconds": str(int(WINDOW_S * 1000)),
            "X-HubSpot-RateLimit-Daily": str(self.daily),
            "X-HubSpot-RateLimit-Daily-Remaining": str(self.daily - self.used_today),
        }


def rate_limit_body(policy: str) -> dict[str, Any]:
    message = {
        "DAILY": "You have reached your daily limit.",
        "TEN_SECONDLY_ROLLING": "You have reached your ten_secondly_rolling limit.",
    }[policy]
    return {
        "status": "error",
        "message": message,
        "errorType": "RATE_LIMIT",
        "correlationId": str(uuid.uuid4()),
        "policyName": policy,
        "requestId": str(uuid.uuid4()),
    }


class FakeHubSpot:
    """The server's state and the test hooks (seed, edit, delete, counters)."""

    def __init__(
        self,
        *,
        per_10s: int = 190,
        daily: int = 1_000_000,
        lag: float = 0.0,
        token: str = "test-token",
        clock: Callable[[], float] = time.time,
        search_cap: int = ops.SEARCH_CAP,
    ) -> None:
        self.lock = threading.Lock()
        self.store = Store(clock=clock, lag=lag, search_cap=search_cap)
        self.limits = RateLimits(per_10s, daily, clock)
        self.token = token
        self.base_url = ""
        self.requests: Counter[str] = Counter()  # "METHOD path" -> authorised requests
        self.throttled = 0
        self.unauthorized = 0
        self.failures: deque[int] = deque()  # statuses to answer with before real work

    @property
    def total_requests(self) -> int:
        return sum(self.requests.values())

    # -- test hooks: behind the API, not rate limited or counted ---------------
    def seed(self, n: int, *, start_ms: int | None = None, step_ms: int = 1) -> list[str]:
        """Create n contacts fast, `lastmodifieddate` step_ms apart, searchable at once."""
        with self.lock:
            base = self.store.now_ms() - n * step_ms if start_ms is None else start_ms
            ids = []
            for i in range(n):
                seq = self.store.next_id
                props = {"email": f"seed{seq}@example.test", "firstname": f"F{seq}"}
                c = self.store.create(props, at_ms=base + i * step_ms)
                self.store.index[c.id] = [(0.0, c.copy())]
                ids.append(c.id)
            return ids

    def edit(self, contact_id: str, **properties: str) -> None:
        """Change a contact as a HubSpot user would (bumps lastmodifieddate, lags search)."""
        with self.lock:
            c = self.store.live(contact_id)
            if c is None:
                raise KeyError(contact_id)
            self.store.update(c, properties)

    def delete(self, contact_id: str, *, hard: bool = False) -> None:
        """Archive a contact (as the UI does) or, with hard=True, remove it entirely."""
        with self.lock:
            if hard:
                self.store.purge(contact_id)
            else:
                self.store.archive(contact_id)

    def restore(self, contact_id: str) -> None:
        """Restore an archived contact from the recycle bin, as a HubSpot user can."""
        with self.lock:
            self.store.restore(contact_id)

    def get(self, contact_id: str) -> Contact | None:
        with self.lock:
            c = self.store.contacts.get(contact_id)
            return None if c is None else c.copy()

    def live_count(self) -> int:
        with self.lock:
            return sum(1 for c in self.store.contacts.values() if not c.archived)

    def fail_next(self, status: int, times: int = 1) -> None:
        """Answer the next `times` authorised requests with `status` (e.g. 502)."""
        with self.lock:
            self.failures.extend([status] * times)

    # -- one request -------------------------------------------------------------
    def handle(
        self, method: str, target: str, auth: str | None, raw: bytes
    ) -> tuple[int, dict[str, Any] | None, dict[str, str]]:
        url = urlsplit(target)
        with self.lock:
            if auth != f"Bearer {self.token}":
                self.unauthorized += 1
                err = ApiError(
                    401,
                    "INVALID_AUTHENTICATION",
                    "Authentication credentials not found. This API supports OAuth 2.0 "
                    "authentication",
                )
                return 401, err.body(str(uuid.uuid4())), {}
            policy, headers = self.limits.take()
            if policy is not None:
                self.throttled += 1
                return 429, rate_limit_body(policy), headers
            self.requests[f"{method} {url.path}"] += 1
            if self.failures:
                status = self.failures.popleft()
                err = ApiError(status, "INTERNAL_ERROR", "Injected failure")
                return status, err.body(str(uuid.uuid4())), headers
            try:
                status, body = self._route(method, url.path, url.query, raw)
            except ApiError as e:
                status, body = e.status, e.body(str(uuid.uuid4()))
            return status, body, headers

    def _route(self, method: str, path: str, query: str, raw: bytes) -> ops.Response:
        if method == "GET" and path == CONTACTS:
            return ops.list_contacts(self.store, parse_qs(query))
        if method == "GET" and path.startswith(CONTACTS + "/"):
            c = self.store.live(path.rsplit("/", 1)[1])
            if c is None:
                raise ApiError(404, "OBJECT_NOT_FOUND", "Object not found")
            props = parse_qs(query).get("properties", [""])[0]
            return 200, c.render([p for p in props.split(",") if p] or None)
        if method == "POST" and path in POSTS:
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                raise ApiError(400, "VALIDATION_ERROR", "Invalid JSON body") from None
            return POSTS[path](self.store, body)
        raise ApiError(404, "OBJECT_NOT_FOUND", f"No route for {method} {path}")


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def _serve(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        status, body, headers = self.server.fake.handle(
            method, self.path, self.headers.get("Authorization"), raw
        )
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        if body is not None:
            self.send_header("Content-Type", "application/json;charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: request lines would flood test output."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, fake: FakeHubSpot) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.fake = fake


@contextmanager
def hubspot_server(**limits: Any) -> Iterator[FakeHubSpot]:
    """Run a fake HubSpot for the block; keyword arguments are FakeHubSpot's."""
    fake = FakeHubSpot(**limits)
    server = _Server(fake)
    host, port = server.server_address[:2]
    fake.base_url = f"http://{host!s}:{port}"
    # A short poll interval: shutdown() waits for it, once per test.
    thread = threading.Thread(
        target=server.serve_forever, args=(0.02,), name="fake-hubspot", daemon=True
    )
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
