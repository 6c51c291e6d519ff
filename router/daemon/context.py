"""What the router's parts share: config, store, registry, counters.

One small object passed to the pipeline, the control server and the operator actions,
so none of them imports another and the shared state is visible in one place.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from router.authz import Principals
from router.clock import HUB, actor_epoch
from router.config import RouterConfig
from router.control import CaptureHealth
from router.daemon.stats import Stats
from router.policies import Rules
from router.registry import Registration, subscribers
from router.state import RouterStore
from router.watermarks import Watermarks, issued_actors

T = TypeVar("T")


@dataclass(frozen=True)
class _Registry:
    """The registry with its subscriber lists, replaced whole on every change, never
    mutated in place: a batch being decided keeps reading the one it started with."""

    adapters: dict[str, Registration]
    subscribers: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class RouterContext:
    config: RouterConfig
    stats: Stats = field(default_factory=Stats)
    beats: dict[str, float] = field(default_factory=dict)  # adapter -> last heartbeat
    # adapter -> its capture's health, as its last heartbeat said (memory only)
    capture_health: dict[str, CaptureHealth] = field(default_factory=dict)
    _store: RouterStore | None = None
    _registry: _Registry = field(default_factory=lambda: _Registry({}))
    _rules: dict[str, Rules] = field(default_factory=dict)
    # Every actor the router issued and its highest counter (clock validation).
    marks: Watermarks = field(default_factory=lambda: Watermarks({}))

    @property
    def principals(self) -> Principals:
        sec = self.config.security
        return Principals.of(sec.adapter_users, sec.operator_users, sec.router_user)

    async def db(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a store call, on the event loop itself.

        A worker thread would keep the loop free during a transaction, but the sqlite
        driver gives up and retakes the GIL for every row it writes: with the loop busy
        publishing the previous batch, the two threads traded the GIL thousands of times
        per batch, and the router spent ~15 % more CPU per event than on one thread
        (bench/router_throughput.py). A batch's transaction takes milliseconds; the
        broker keeps confirming the previous batch meanwhile. Calls are serialised by
        the loop, and a coroutine so that a store on a worker could come back.
        """
        return fn(*args)

    @property
    def store(self) -> RouterStore:
        assert self._store is not None, "router not started"
        return self._store

    def open(
        self,
        store: RouterStore,
        registry: dict[str, Registration],
        highs: Mapping[str, int] | None = None,
        inexact: Iterable[str] = (),
    ) -> None:
        self._store = store
        store.match_keys = self.config.match_keys()
        self.marks = Watermarks(highs or {}, inexact=inexact)
        self.know_hub_actor(store.hub_actor)
        self.set_registry(registry)

    def know_hub_actor(self, actor: str) -> None:
        self.marks.know(issued_actors(HUB, actor_epoch(actor)))

    async def close(self) -> None:
        if self._store is not None:
            self._store.close()

    @property
    def registry(self) -> dict[str, Registration]:
        return self._registry.adapters

    def set_registry(self, registry: dict[str, Registration]) -> None:
        self._registry = _Registry(registry)
        for reg in registry.values():
            self.marks.know(issued_actors(reg.name, reg.epoch))

    def registered(self, reg: Registration) -> None:
        self.set_registry({**self.registry, reg.name: reg})
        self.beats[reg.name] = reg.last_heartbeat

    def removed(self, name: str) -> None:
        self.set_registry({k: v for k, v in self.registry.items() if k != name})
        self.beats.pop(name, None)
        self.capture_health.pop(name, None)

    def subscribers(self, entity: str) -> list[str]:
        """Subscribers of ``entity`` in one snapshot of the registry."""
        view = self._registry
        cached = view.subscribers.get(entity)
        if cached is None:
            cached = view.subscribers[entity] = subscribers(view.adapters, entity)
        return cached

    def match_keys(self, entity: str) -> tuple[str, ...]:
        """The entity's identity match keys in order (empty: no matching)."""
        return self.store.match_keys.get(entity, ())

    def rules_for(self, entity: str) -> Rules:
        rules = self._rules.get(entity)
        if rules is None:
            rules = self._rules[entity] = self.config.rules(entity)
        return rules
