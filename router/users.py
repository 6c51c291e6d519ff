"""What each crmsync role may do on the broker, as RabbitMQ permissions: pure data.

``crmsync users create NAME --role ROLE`` grants exactly these on the vhost of
``broker.url`` (docs/operations.md, "Users and permissions"). RabbitMQ checks
configure/write/read against the *name* of the exchange or queue, and narrows by
routing key only on topic exchanges (topic permissions), which is why everything an
adapter writes goes through topic exchanges under keys that start with its name:

* events on ``crmsync.changes`` (``NAME.entity.op``), its own retry tiers and DLQ on
  ``crmsync.retry`` (``NAME.DELAY``, ``NAME.dead``), its requests and replies on
  ``crmsync.control`` (``register.NAME``, ``heartbeat.NAME``, ``reply.*``);
* it reads only its sink and its own reply/request queues (``crmsync.reply.USER.<hex>``,
  ``crmsync.requests.USER.<hex>``), which it alone may create; its sink, DLQ and tiers
  are declared by the router when it registers (a queue's dead-letter exchange needs
  write on it, which would let it write into any sink).

A user with no topic permission on an exchange may use every routing key there, so an
adapter gets one on each topic exchange it may touch.
"""

from __future__ import annotations

import re
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict

from router import topology

Role = Literal["adapter", "router", "operator"]
ROLES: Final[tuple[Role, ...]] = ("adapter", "router", "operator")
# Kept in the user's tags: `users list` shows it and `users remove` touches only these.
TAG_PREFIX: Final = "crmsync-"
NOTHING: Final = "^$"  # RabbitMQ: a pattern matching no name


class TopicGrant(BaseModel):
    model_config = ConfigDict(frozen=True)
    exchange: str
    write: str
    read: str


class Grant(BaseModel):
    """The permissions of one user on one vhost."""

    model_config = ConfigDict(frozen=True)
    configure: str
    write: str
    read: str
    topics: tuple[TopicGrant, ...] = ()


def _x(name: str) -> str:
    return re.escape(name)


def _own(user: str, *prefixes: str) -> str:
    heads = "|".join(_x(p) for p in prefixes)
    return rf"^(?:{heads})\.{_x(user)}\.[0-9a-f]+$"


def _names(*names: str) -> str:
    return "^(?:" + "|".join(_x(n) for n in names) + ")$"


def grant(role: Role, name: str) -> Grant:
    """What a ``role`` user named ``name`` may do (for an adapter, ``name`` is also the
    adapter's name: its queues and routing keys are named by it)."""
    if role == "adapter":
        own = _own(name, topology.REPLY_PREFIX, topology.REQUESTS_PREFIX)
        hub = _names(topology.CHANGES, topology.CONTROL, topology.RETRY)
        reply = _x(topology.REPLY_KEY_PREFIX)
        return Grant(
            configure=own,
            write=f"{hub}|{own}",
            read=f"{_names(topology.sink_queue(name), topology.CONTROL)}|{own}",
            topics=(
                TopicGrant(exchange=topology.CHANGES, write=rf"^{_x(name)}\.", read=NOTHING),
                TopicGrant(exchange=topology.RETRY, write=rf"^{_x(name)}\.", read=NOTHING),
                TopicGrant(
                    exchange=topology.CONTROL,
                    # Replies go to whoever asked (the router, an operator's command).
                    write=rf"^(?:register|heartbeat)\.{_x(name)}$|^{reply}\.",
                    read=(
                        rf"^{reply}\.{_x(topology.REPLY_PREFIX)}\.{_x(name)}\.[0-9a-f]+$"
                        rf"|^adapter\.{_x(name)}\.\*$"
                    ),
                ),
            ),
        )
    if role == "router":
        # The hub's owner: declares everything, writes deliveries and replies (the
        # default exchange for replies to clients of older versions and the invalid queue).
        every = r"^crmsync\."
        return Grant(configure=every, write=rf"{every}|^amq\.default$", read=every)
    own = _own(name, topology.REPLY_PREFIX)
    reply = _x(topology.REPLY_KEY_PREFIX)
    return Grant(
        configure=own,
        # Replays publish to the sinks (crmsync.deliveries) and, for the invalid queue,
        # to crmsync.changes under the original source (judged by the operator's rights).
        write=f"{_names(topology.CHANGES, topology.DELIVERIES, topology.CONTROL)}|{own}",
        read=rf"^crmsync\.dlq\.[^.]+$|{_names(topology.INVALID, topology.CONTROL)}|{own}",
        topics=(
            TopicGrant(
                exchange=topology.CONTROL,
                write=rf"^op\.|^{reply}\.",
                read=rf"^{reply}\.{_x(topology.REPLY_PREFIX)}\.{_x(name)}\.[0-9a-f]+$",
            ),
        ),
    )


def tag(role: Role) -> str:
    return f"{TAG_PREFIX}{role}"


def role_of(tags: str | list[str]) -> Role | None:
    """The crmsync role in a user's tags (None: not a user crmsync made)."""
    items = tags.split(",") if isinstance(tags, str) else tags
    for item in items:
        for role in ROLES:
            if item.strip() == tag(role):
                return role
    return None
