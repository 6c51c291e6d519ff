"""Who may do what on the hub (``[security]``): pure decisions, no I/O.

RabbitMQ verifies a message's ``user_id`` against the publishing connection's user, so
``user_id`` is proof of who published. With ``adapter_users`` set the router trusts
nothing else:

* an **event** is accepted only when its ``user_id`` is the user of the adapter its
  body names as ``source``, and its routing key names that same adapter (``NAME.``); an
  operator's user may publish for any source (a replay of an invalid-queue entry is
  judged by the replaying operator's rights);
* a **control request**: an adapter registers and heartbeats only as itself; every
  ``op.*`` request (edit, resolve, remove, migrations, status, listings) needs an
  operator's user.

Without ``adapter_users`` (a development hub with one broker user) nothing is checked,
which ``crmsync doctor`` and the router's start-up log point out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

ADAPTER_REQUESTS = ("register", "heartbeat")


@dataclass(frozen=True)
class Principals:
    adapter_users: Mapping[str, str] = field(default_factory=dict)  # adapter -> user
    operators: frozenset[str] = frozenset()
    router_user: str | None = None

    @classmethod
    def of(
        cls,
        adapter_users: Mapping[str, str],
        operator_users: Sequence[str] = (),
        router_user: str | None = None,
    ) -> Principals:
        return cls(dict(adapter_users), frozenset(operator_users), router_user)

    @property
    def enforced(self) -> bool:
        return bool(self.adapter_users)

    def adapter_of(self, user: str | None) -> str | None:
        """The adapter ``user`` is (None: no adapter's user)."""
        for adapter, name in self.adapter_users.items():
            if name == user:
                return adapter
        return None

    def event_refusal(self, source: str, routing_key: str, user_id: str | None) -> str | None:
        """Why an event may not be accepted as ``source``'s (None: it may)."""
        if not self.enforced:
            return None
        if routing_key.split(".", 1)[0] != source:
            return f"routing key {routing_key!r} does not name the body's source {source!r}"
        if user_id is not None and user_id in self.operators:
            return None
        owner = self.adapter_of(user_id)
        if owner is None:
            expected = self.adapter_users.get(source)
            wanted = f"user {expected!r}" if expected else "an adapter listed in adapter_users"
            return f"source {source!r} must be published by {wanted}, not {_who(user_id)}"
        if owner != source:
            return f"user {user_id!r} belongs to adapter {owner!r}, not {source!r}"
        return None

    def request_refusal(self, routing_key: str, user_id: str | None) -> str | None:
        """Why a control request may not be served (None: it may)."""
        if not self.enforced:
            return None
        head, _, name = routing_key.partition(".")
        if head in ADAPTER_REQUESTS:
            if self.adapter_of(user_id) == name:
                return None
            return f"{head} as {name!r} needs that adapter's user, not {_who(user_id)}"
        if user_id is not None and user_id in self.operators:
            return None
        return (
            f"{routing_key} needs an operator's user (security.operator_users), not {_who(user_id)}"
        )


def _who(user_id: str | None) -> str:
    return repr(user_id) if user_id else "a message without user_id"
