"""RabbitMQ's management HTTP API, for ``crmsync users``: users, their permissions and
topic permissions on one vhost. The credentials are those of ``broker.url`` (an
administrator's, for these commands); the API's address is ``broker.management_url``
or, by default, ``http://HOST:15672`` of ``broker.url`` (``https`` for ``amqps://``).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, unquote, urlsplit

import httpx

from router.broker.settings import redact
from router.errors import AccessRefused, BrokerUnavailable, ConfigError, CrmsyncError
from router.users import Grant

MANAGEMENT_PORT = 15672


def management_base(amqp_url: str, configured: str | None) -> str:
    """The management API's base URL (no trailing slash)."""
    if configured:
        return configured.rstrip("/")
    parts = urlsplit(amqp_url)
    scheme = "https" if parts.scheme == "amqps" else "http"
    return f"{scheme}://{parts.hostname or 'localhost'}:{MANAGEMENT_PORT}"


def vhost_of(amqp_url: str) -> str:
    """The vhost of an AMQP URL as RabbitMQ names it (``/`` when the path is empty)."""
    path = urlsplit(amqp_url).path
    return unquote(path[1:]) if len(path) > 1 else "/"


def _q(name: str) -> str:
    return quote(name, safe="")


class Management:
    """A few calls of the management API, each failure one line (exit 3)."""

    def __init__(self, amqp_url: str, base: str, timeout: float = 10.0) -> None:
        parts = urlsplit(amqp_url)
        self.vhost = vhost_of(amqp_url)
        self.base = base
        self.admin = unquote(parts.username or "guest")
        password = unquote(parts.password or "guest")
        self._http = httpx.Client(
            base_url=f"{base}/api", auth=(self.admin, password), timeout=timeout
        )

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, body: Any = None, ok404: bool = False) -> Any:
        where = f"the RabbitMQ management API at {redact(self.base)}"
        try:
            resp = self._http.request(method, path, json=body)
        except httpx.HTTPError as e:
            raise BrokerUnavailable(
                f"cannot reach {where} ({type(e).__name__}); is the management plugin "
                "enabled (rabbitmq-plugins enable rabbitmq_management)? Set "
                "broker.management_url if it listens elsewhere"
            ) from None
        if resp.status_code == 404 and ok404:
            return None
        if resp.status_code in (401, 403):
            raise AccessRefused(
                f"{where} refused user '{self.admin}' ({resp.status_code}): managing users "
                "needs a broker user with the administrator tag"
            )
        if resp.status_code >= 400:
            reason = resp.json().get("reason", "") if resp.content else ""
            raise CrmsyncError(f"{where}: {method} {path}: {resp.status_code} {reason}".strip())
        return resp.json() if resp.content else None

    def user(self, name: str) -> dict[str, Any] | None:
        found = self._call("GET", f"/users/{_q(name)}", ok404=True)
        return found if isinstance(found, dict) else None

    def create(self, name: str, password: str, tag: str, grant: Grant) -> None:
        """Create (or reset) ``name`` with exactly ``grant`` on this vhost."""
        if self._call("GET", f"/vhosts/{_q(self.vhost)}", ok404=True) is None:
            raise ConfigError(f"broker.url: vhost '{self.vhost}' does not exist on the broker")
        self._call("PUT", f"/users/{_q(name)}", {"password": password, "tags": tag})
        where = f"{_q(self.vhost)}/{_q(name)}"
        perms = {"configure": grant.configure, "write": grant.write, "read": grant.read}
        self._call("PUT", f"/permissions/{where}", perms)
        # Exactly these: a topic permission left from an earlier role would widen it.
        self._call("DELETE", f"/topic-permissions/{where}", ok404=True)
        for topic in grant.topics:
            body = {"exchange": topic.exchange, "write": topic.write, "read": topic.read}
            self._call("PUT", f"/topic-permissions/{where}", body)

    def users(self) -> list[dict[str, Any]]:
        """Users with permissions on this vhost, each with its ``tags``."""
        perms = self._call("GET", f"/vhosts/{_q(self.vhost)}/permissions") or []
        found = []
        for p in perms:
            info = self.user(p["user"]) or {}
            found.append({**p, "tags": info.get("tags", "")})
        return found

    def remove(self, name: str) -> None:
        self._call("DELETE", f"/users/{_q(name)}")
