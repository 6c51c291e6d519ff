"""TinyCRM, the small REST CRM of docs/writing-an-adapter.md, served for its tests.

`with tinycrm_server() as crm:` runs a stdlib ThreadingHTTPServer on 127.0.0.1 (a free
port) until the block ends: `crm.base_url`, `crm.token`; `crm.people` is the store,
which a test edits as a TinyCRM user would (`crm.user_create`, `crm.user_update`,
`crm.user_delete`). `crm.throttle_next(n, retry_after)` answers the next n requests 429.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
WRITABLE = ("email", "name", "phone")
BEGINNING = datetime.min.replace(tzinfo=UTC)


@dataclass
class TinyCrm:
    base_url: str = ""
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    people: dict[int, dict[str, Any]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    idempotency: dict[str, int] = field(default_factory=dict)
    requests: int = 0
    throttled: int = 0
    _throttle: int = 0
    _retry_after: float = 0.0
    _last: datetime = BEGINNING

    def _stamp(self) -> str:
        # Strictly increasing microseconds, as a database sequence of commits would be.
        now = max(datetime.now(UTC), self._last + timedelta(microseconds=1))
        self._last = now
        return now.isoformat()

    def throttle_next(self, count: int, retry_after: float = 0.2) -> None:
        with self.lock:
            self._throttle, self._retry_after = count, retry_after

    # -- what a TinyCRM user does --------------------------------------------------------
    def user_create(self, **values: Any) -> int:
        with self.lock:
            return self._create(values)["id"]

    def user_update(self, person_id: int, **values: Any) -> None:
        with self.lock:
            self.people[person_id].update(values, updated_at=self._stamp())

    def user_delete(self, person_id: int) -> None:
        with self.lock:
            self.people[person_id].update(deleted=True, updated_at=self._stamp())

    def _create(self, values: dict[str, Any]) -> dict[str, Any]:
        person_id = max(self.people, default=0) + 1
        person = {"id": person_id, **{k: values.get(k) for k in WRITABLE}}
        person.update(deleted=False, updated_at=self._stamp())
        self.people[person_id] = person
        return person

    # -- the API --------------------------------------------------------------------------
    def handle(self, method: str, url: str, headers: Any, body: Any) -> tuple[int, Any, dict]:
        with self.lock:
            self.requests += 1
            if headers.get("Authorization") != f"Bearer {self.token}":
                return 401, {"error": {"code": "unauthorized"}}, {}
            if self._throttle > 0:
                self._throttle -= 1
                self.throttled += 1
                return (
                    429,
                    {"error": {"code": "rate_limited"}},
                    {"Retry-After": str(self._retry_after)},
                )
            parts = urlsplit(url)
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            path = parts.path.rstrip("/")
            if path == "/api/time" and method == "GET":
                return 200, {"now": datetime.now(UTC).isoformat()}, {}
            if path == "/api/people/count" and method == "GET":
                return 200, {"live": sum(not p["deleted"] for p in self.people.values())}, {}
            if path == "/api/people":
                if method == "GET":
                    return 200, {"people": self._list(query)}, {}
                if method == "POST":
                    return self._post(headers.get("Idempotency-Key"), body)
            match = re.fullmatch(r"/api/people/(\d+)", path)
            if match:
                return self._one(method, int(match.group(1)), headers.get("If-Match"), body)
            return 404, {"error": {"code": "no_such_endpoint"}}, {}

    def _list(self, query: dict[str, str]) -> list[dict[str, Any]]:
        limit = int(query.get("limit", "100"))
        people = list(self.people.values())
        if query.get("order") == "id":
            after = int(query.get("after_id", "0"))
            return [dict(p) for p in sorted(people, key=lambda p: p["id"]) if p["id"] > after][
                :limit
            ]
        since = datetime.fromisoformat(query["updated_since"])
        after_id = query.get("after_id")

        def wanted(p: dict[str, Any]) -> bool:
            stamp = datetime.fromisoformat(p["updated_at"])
            if after_id is None:
                return stamp >= since
            return (stamp, p["id"]) > (since, int(after_id))

        chosen = sorted(
            (p for p in people if wanted(p)),
            key=lambda p: (datetime.fromisoformat(p["updated_at"]), p["id"]),
        )
        return [dict(p) for p in chosen[:limit]]

    def _invalid(self, body: Any) -> tuple[int, Any, dict] | None:
        if not isinstance(body, dict) or set(body) - set(WRITABLE):
            return 400, {"error": {"field": "body", "code": "unknown_property"}}, {}
        email = body.get("email")
        if email is not None and not EMAIL.match(str(email)):
            return 422, {"error": {"field": "email", "code": "invalid"}}, {}
        return None

    def _post(self, key: str | None, body: Any) -> tuple[int, Any, dict]:
        if key is not None and key in self.idempotency:
            return 201, dict(self.people[self.idempotency[key]]), {}
        bad = self._invalid(body)
        if bad:
            return bad
        person = self._create(body)
        if key is not None:
            self.idempotency[key] = person["id"]
        return 201, dict(person), {}

    def _one(
        self, method: str, person_id: int, if_match: str | None, body: Any
    ) -> tuple[int, Any, dict]:
        person = self.people.get(person_id)
        if person is None:
            return 404, {"error": {"code": "not_found"}}, {}
        if method == "GET":
            return 200, dict(person), {}
        if if_match is not None and if_match != person["updated_at"]:
            return 412, {"error": {"code": "changed"}}, {}
        if method == "PATCH":
            bad = self._invalid(body)
            if bad:
                return bad
            person.update(body, updated_at=self._stamp())
            return 200, dict(person), {}
        if method == "DELETE":
            person.update(deleted=True, updated_at=self._stamp())
            return 200, dict(person), {}
        return 405, {"error": {"code": "method"}}, {}


class _Handler(BaseHTTPRequestHandler):
    crm: TinyCrm

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else None
        status, answer, extra = self.crm.handle(self.command, self.path, self.headers, body)
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in extra.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PATCH = do_DELETE = _serve

    def log_message(self, *_: Any) -> None:
        pass


@contextmanager
def tinycrm_server() -> Iterator[TinyCrm]:
    crm = TinyCrm()
    handler = type("Handler", (_Handler,), {"crm": crm})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    crm.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield crm
    finally:
        server.shutdown()
        server.server_close()
