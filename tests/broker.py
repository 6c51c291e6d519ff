"""Throwaway RabbitMQ vhosts for tests (nameko's approach): every test run sees only
its own messages, and nothing is left behind.

Uses the management API (fast); ``.ci/run`` enables the plugin. In CI (``CI=true``) a
missing broker fails the run loudly instead of skipping.
"""

from __future__ import annotations

import base64
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

MGMT = os.environ.get("CRMSYNC_TEST_MGMT_URL", "http://127.0.0.1:15672")
AMQP_HOST = os.environ.get("CRMSYNC_TEST_AMQP_HOST", "127.0.0.1:5672")
USER, PASSWORD = "guest", "guest"


def _request(method: str, path: str, body: object | None = None) -> object:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"{MGMT}/api{path}", data=data, method=method)
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    req.add_header("Authorization", f"Basic {token}")
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=10) as resp:
        raw = resp.read()
    return json.loads(raw) if raw else None


def broker_available() -> str | None:
    """None when the broker and its management API answer, else why not."""
    try:
        _request("GET", "/overview")
    except (OSError, urllib.error.URLError) as e:
        return f"RabbitMQ management API at {MGMT} unreachable: {e}"
    return None


def create_vhost(prefix: str = "crmsync-test") -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:10]}"
    quoted = urllib.parse.quote(name, safe="")
    _request("PUT", f"/vhosts/{quoted}", {})
    _request(
        "PUT", f"/permissions/{quoted}/{USER}", {"configure": ".*", "write": ".*", "read": ".*"}
    )
    return name


def delete_vhost(name: str) -> None:
    try:
        _request("DELETE", f"/vhosts/{urllib.parse.quote(name, safe='')}")
    except urllib.error.HTTPError as e:
        if e.code != 404:
            raise


def set_policy(vhost: str, name: str, pattern: str, definition: dict[str, object]) -> None:
    """Apply (or replace) policy ``name``: ``definition`` for the queues of ``vhost`` whose
    names match ``pattern``, as an operator would. It goes with the vhost."""
    quoted = urllib.parse.quote(vhost, safe="")
    body = {"pattern": pattern, "definition": definition, "apply-to": "queues"}
    _request("PUT", f"/policies/{quoted}/{urllib.parse.quote(name, safe='')}", body)


def amqp_url(vhost: str) -> str:
    return f"amqp://{USER}:{PASSWORD}@{AMQP_HOST}/{urllib.parse.quote(vhost, safe='')}"


def queue_depth(vhost: str, queue: str) -> int:
    info = _request(
        "GET", f"/queues/{urllib.parse.quote(vhost, safe='')}/{urllib.parse.quote(queue, safe='')}"
    )
    assert isinstance(info, dict)
    return int(info.get("messages", 0))


def close_connections(vhost: str, at_least: int = 1) -> int:
    """Force-close every client connection on ``vhost``, as a broker restart or a network
    cut would. Returns how many were closed."""
    # The management plugin lists connections from its stats database, which lags behind
    # the broker on a busy machine (an empty list for a vhost with live clients was seen
    # in CI, and with tests in parallel, a part of them): ask again for a while until it
    # lists the ``at_least`` connections the caller knows of.
    deadline = time.monotonic() + 15
    while True:
        conns = _request("GET", f"/vhosts/{urllib.parse.quote(vhost, safe='')}/connections")
        assert isinstance(conns, list)
        if len(conns) >= at_least or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    for conn in conns:
        try:
            _request("DELETE", f"/connections/{urllib.parse.quote(conn['name'], safe='')}")
        except urllib.error.HTTPError as e:
            if e.code != 404:
                raise
    return len(conns)


def delete_queue(vhost: str, queue: str) -> None:
    """Delete a queue as an operator would from the management UI, consumers or not."""
    path = f"/queues/{urllib.parse.quote(vhost, safe='')}/{urllib.parse.quote(queue, safe='')}"
    _request("DELETE", path)


def create_user(vhost: str, role: str) -> tuple[str, str]:
    """A throwaway broker user with every permission on ``vhost`` (the router's checks
    are under test, not the broker's): (name, password). Remove it with delete_user."""
    name = f"crmsync-t-{uuid.uuid4().hex[:8]}-{role}"
    password = uuid.uuid4().hex
    _request(
        "PUT", f"/users/{urllib.parse.quote(name, safe='')}", {"password": password, "tags": ""}
    )
    _request(
        "PUT",
        f"/permissions/{urllib.parse.quote(vhost, safe='')}/{urllib.parse.quote(name, safe='')}",
        {"configure": ".*", "write": ".*", "read": ".*"},
    )
    return name, password


def delete_user(name: str) -> None:
    try:
        _request("DELETE", f"/users/{urllib.parse.quote(name, safe='')}")
    except urllib.error.HTTPError as e:
        if e.code != 404:
            raise


def user_url(vhost: str, user: str, password: str) -> str:
    return (
        f"amqp://{urllib.parse.quote(user, safe='')}:{password}@{AMQP_HOST}/"
        f"{urllib.parse.quote(vhost, safe='')}"
    )
