"""The doctor's look at the broker: the login, the vhost and the user's permissions,
the topology (exchanges and queues with their arguments), the router's status and the
broker's clock.

Passive only: the topology is read from the management API (it shows a queue's
arguments; a passive AMQP declare does not), and without that API only whether each
queue exists is checked (a passive declare). Nothing is declared or published, except
the status request ``crmsync status`` also sends.
"""

from __future__ import annotations

import email.utils
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

import httpx

from router import topology
from router.adapter_config import AdapterConfig
from router.broker.base import BrokerConnection
from router.broker.management import management_base, vhost_of
from router.broker.refusals import login_user
from router.broker.settings import redact
from router.config import BrokerConfig
from router.doctor.judge import (
    adapter_queues_check,
    backlog,
    clock_skew,
    exchange_check,
    queue_check,
)
from router.doctor.verdicts import Check, fail, ok, warn
from router.errors import CrmsyncError

HTTP_TIMEOUT = 5.0


@dataclass(frozen=True)
class Management:
    """The management API of the broker, with the login of ``broker.url``."""

    base: str
    user: str
    password: str
    vhost: str

    def path(self, kind: str, name: str = "") -> str:
        tail = f"/{quote(name, safe='')}" if name else ""
        return f"{self.base}/api/{kind}/{quote(self.vhost, safe='')}{tail}"


def management_for(url: str, base: str | None) -> Management:
    # The same address `crmsync users` uses: broker.management_url, else HOST:15672.
    root, vhost = management_base(url, base), vhost_of(url)
    # The password as the broker sees it: login_user's counterpart, never printed.
    rest = url.partition("://")[2]
    creds = rest[: rest.rfind("@")] if "@" in rest else "guest:guest"
    password = unquote(creds.split(":", 1)[1]) if ":" in creds else ""
    return Management(root.rstrip("/"), login_user(url), password, vhost)


async def broker_checks(
    cfg: BrokerConfig,
    adapters: Sequence[AdapterConfig],
    management_url: str | None,
    status_timeout: float,
) -> list[Check]:
    """Every broker check; an unreachable broker or a refused login is one line (the
    checks that need a connection are then not run, and say nothing)."""
    from router.broker.aio import connect

    try:
        url = cfg.effective_url()
    except CrmsyncError as e:
        return [fail("broker", str(e))]
    mgmt = management_for(url, management_url or cfg.management_url)
    # The management API over https is trusted like the broker: broker.tls.ca_file.
    ca = cfg.tls.ca_file if cfg.tls is not None else None
    try:
        verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=ca) if ca else True
    except (OSError, ssl.SSLError) as e:
        return [fail("broker", f"broker.tls.ca_file: cannot load {ca} ({e})")]
    async with httpx.AsyncClient(
        auth=(mgmt.user, mgmt.password), timeout=HTTP_TIMEOUT, verify=verify
    ) as http:
        try:
            connection = await connect(cfg, "crmsync-doctor")
        except CrmsyncError as e:
            return [await _refused(http, mgmt, str(e))]
        try:
            checks = [ok("broker", f"{redact(url)} accepts user '{mgmt.user}'")]
            found = await _management_view(http, mgmt)
            checks += _permission_checks(found, mgmt)
            checks += await _topology_checks(connection, found, adapters)
            checks += await _status_checks(connection, status_timeout, adapters)
            checks.append(_broker_clock(found, mgmt))
        finally:
            await connection.close()
    return checks + await _adapter_logins(adapters, url)


async def _adapter_logins(adapters: Sequence[AdapterConfig], router_url: str) -> list[Check]:
    """Each adapter's own broker login, where it has one (a user per adapter): the
    router's working says nothing of theirs. Connect and close, nothing else."""
    from router.broker.aio import connect

    checks = []
    for cfg in adapters:
        what = f"adapter {cfg.name}: broker login"
        try:
            url = cfg.broker.effective_url()
            if url == router_url:
                continue
            connection = await connect(cfg.broker, f"crmsync-doctor-{cfg.name}")
        except CrmsyncError as e:
            checks.append(fail(what, str(e)))
            continue
        await connection.close()
        checks.append(ok(what, f"{redact(url)} accepts user '{login_user(url)}'"))
    return checks


async def _refused(http: httpx.AsyncClient, mgmt: Management, said: str) -> Check:
    """The connect's own line, unless the management API can tell the real reason: a
    missing vhost reads to the AMQP client as a protocol error."""
    try:
        reply = await http.get(f"{mgmt.base}/api/vhosts/{quote(mgmt.vhost, safe='')}")
    except httpx.HTTPError:
        return fail("broker", said)
    if reply.status_code == 404:
        return fail(
            "broker",
            f"vhost '{mgmt.vhost}' does not exist",
            f"create it (rabbitmqctl add_vhost {mgmt.vhost}) or fix the vhost in broker.url",
        )
    return fail("broker", said)


@dataclass
class _Found:
    """What the management API answered; ``error`` set when it did not."""

    error: str | None = None
    permissions: dict[str, Any] | None = None
    exchanges: dict[str, dict[str, Any]] | None = None
    queues: dict[str, dict[str, Any]] | None = None
    offset: float | None = None  # broker clock minus this host's, seconds


async def _management_view(http: httpx.AsyncClient, mgmt: Management) -> _Found:
    found = _Found()
    try:
        before = time.time()
        reply = await http.get(f"{mgmt.base}/api/overview")
        after = time.time()
        reply.raise_for_status()
        stamp = email.utils.parsedate_to_datetime(reply.headers["date"]).timestamp()
        # The Date header is whole seconds, and the API's web server refreshes it once a
        # second at a phase of its own: the broker's time is in [stamp, stamp + 2), so
        # +1 centres it (good to 1 s; the thresholds are 2 s and 30 s).
        found.offset = stamp + 1.0 - (before + after) / 2
        perms = await http.get(
            f"{mgmt.base}/api/permissions/{quote(mgmt.vhost, safe='')}/{quote(mgmt.user, safe='')}"
        )
        found.permissions = perms.json() if perms.status_code == 200 else {}
        exchanges = await http.get(mgmt.path("exchanges"))
        queues = await http.get(mgmt.path("queues"))
        exchanges.raise_for_status()
        queues.raise_for_status()
        found.exchanges = {e["name"]: e for e in exchanges.json()}
        found.queues = {q["name"]: q for q in queues.json()}
    except (httpx.HTTPError, KeyError, ValueError) as e:
        reason = (
            f"HTTP {e.response.status_code}"
            if isinstance(e, httpx.HTTPStatusError)
            else type(e).__name__
        )
        found.error = f"management API at {mgmt.base} not usable ({reason})"
    return found


def _permission_checks(found: _Found, mgmt: Management) -> list[Check]:
    what = f"permissions of '{mgmt.user}' on vhost '{mgmt.vhost}'"
    if found.error is not None:
        return []
    perms = found.permissions or {}
    if not perms:
        return [warn(what, "none listed (or not visible to this user)")]
    shown = ", ".join(f"{k} {perms.get(k, '')!r}" for k in ("configure", "write", "read"))
    return [ok(what, shown)]


async def _topology_checks(
    connection: BrokerConnection, found: _Found, adapters: Sequence[AdapterConfig]
) -> list[Check]:
    hub = topology.hub_queues()
    per_adapter = {
        cfg.name: topology.adapter_queues(cfg.name, cfg.retry.tiers()) for cfg in adapters
    }
    if found.exchanges is None or found.queues is None:
        checks = [
            warn(
                "topology arguments",
                f"not compared: {found.error}",
                "enable rabbitmq_management, or pass --management-url",
            )
        ]
        for spec in [*hub, *(s for specs in per_adapter.values() for s in specs)]:
            counts = await connection.queue_counts(spec.name)
            checks.append(queue_check(spec, None) if counts is None else ok(f"queue {spec.name}"))
        return checks
    checks = [exchange_check(e, found.exchanges.get(e.name)) for e in topology.HUB_EXCHANGES]
    checks += [queue_check(spec, found.queues.get(spec.name)) for spec in hub]
    for name, specs in per_adapter.items():
        checks += adapter_queues_check(name, specs, found.queues)
    return checks


async def _status_checks(
    connection: BrokerConnection, timeout: float, adapters: Sequence[AdapterConfig]
) -> list[Check]:
    from router.status import gather_status, queue_depths

    try:
        data = await gather_status(connection, timeout)
        # The status counts the DLQs of registered adapters; a configured adapter not
        # running now may still have dead letters waiting.
        listed = {q["name"] for q in data["queues"]}
        more = [topology.dlq_queue(a.name) for a in adapters]
        for depth in await queue_depths(connection, [q for q in more if q not in listed]):
            if depth.messages is not None:
                data["queues"].append({"name": depth.name, "messages": depth.messages})
    except CrmsyncError as e:
        return [fail("router", f"status not available ({e})")]
    if not data["router"]["alive"]:
        return [
            fail(
                "router",
                f"not answering within {timeout:g} s",
                "start it (crmsync router -c router.toml); crmsync status shows the same",
            ),
            *backlog(data),
        ]
    r = data["router"]
    return [ok("router", f"answering (hub actor {r.get('hub_actor')})"), *backlog(data)]


def _broker_clock(found: _Found, mgmt: Management) -> Check:
    return clock_skew("clock of the broker", found.offset, found.error or "")
