"""A broker refusal on a resource (ACCESS_REFUSED, NOT_FOUND of a hub exchange) as one
line naming the user, the resource and the permission missing. Pure: reads the text
RabbitMQ sends (``access to exchange 'X' in vhost 'V' refused for user 'U'``, ``access
to topic 'K' in exchange 'X' ...``, ``no exchange 'X' in vhost 'V'``) and what crmsync
was doing (``where``, as the broker seam words it: "declare queue Q", "publish to X/K",
"consume Q", "check exchange X", ...).
"""

from __future__ import annotations

import re

_ACCESS = re.compile(
    r"access to (?P<kind>exchange|queue|topic) '(?P<name>[^']*)'"
    r"(?: in exchange '(?P<exchange>[^']*)')? in vhost '(?P<vhost>[^']*)' refused for user "
    r"'(?P<user>[^']*)'"
)
_MISSING = re.compile(r"no (?P<kind>exchange|queue) '(?P<name>[^']*)' in vhost '(?P<vhost>[^']*)'")
_FIX = "grant it (crmsync users create NAME --role ..., docs/operations.md 'Users and permissions')"


def _needed(where: str, kind: str, name: str) -> str:
    """The permission RabbitMQ checked for the operation ``where`` on ``name``."""
    verb = where.split(" ", 1)[0]
    if kind == "topic":
        return "write" if verb == "publish" else "read"
    if verb == "publish":
        return "write"
    if verb in ("consume", "get", "look", "purge"):
        return "read"
    if verb == "declare":
        # A queue's dead-letter exchange needs write; the queue itself configure.
        return "configure" if name in where else "write"
    if verb == "bind":
        return "write" if kind == "queue" else "read"
    return "configure"


def access_refused(text: str, where: str) -> str | None:
    """The one line for an ACCESS_REFUSED whose broker text is ``text`` (None: not one
    that names a resource, e.g. a refused login)."""
    m = _ACCESS.search(text)
    if m is None:
        return None
    kind, name, user, vhost = m["kind"], m["name"], m["user"], m["vhost"]
    if kind == "topic":
        resource = f"routing key '{name}' on exchange '{m['exchange']}'"
        perm = f"topic {_needed(where, kind, name)} permission"
    else:
        resource = f"{kind} '{name}'"
        perm = f"{_needed(where, kind, name)} permission"
    return (
        f"RabbitMQ refused user '{user}' to {where}: no {perm} on {resource} "
        f"(vhost '{vhost}'); {_FIX}"
    )


def not_found(text: str, where: str, hub_exchanges: frozenset[str]) -> str | None:
    """The one line for a hub exchange that is missing (None: not one)."""
    m = _MISSING.search(text)
    if m is None or m["kind"] != "exchange" or m["name"] not in hub_exchanges:
        return None
    return (
        f"cannot {where}: the hub's exchange '{m['name']}' does not exist in vhost "
        f"'{m['vhost']}'; start the router or run 'crmsync topology declare' first "
        "(adapters only check the hub's exchanges)"
    )
