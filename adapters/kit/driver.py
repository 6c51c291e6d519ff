"""The CRM driver: how the conformance kit changes a CRM *outside* the SDK.

The kit must see what capture makes of a change a CRM user made, and make the CRM
refuse a value or be unreachable. Only the adapter's author knows how, so each adapter
kind ships a small driver (``sql``: writes rows directly; ``file``: rewrites the file
as an exporter would) and a new adapter brings its own. Five methods:

* ``insert(entity, fields) -> source_record_id``, ``update(entity, id, fields)``,
  ``delete(entity, id)``: a user's change, made without crmsync (no links, no outbox);
  ``fields`` are canonical names and values, to be stored as the CRM stores them.
* ``refused(entity) -> fields``: canonical fields the CRM refuses to store (a value too
  long, a null where it needs one, text where it wants a number): writing them must
  raise :class:`~router.errors.PermanentWriteError`.
* ``outage()``: a context manager inside which the CRM cannot be reached (writes must
  raise :class:`~router.errors.TransientWriteError`), reachable again after it.
* ``close()``: release what the driver opened.

Optional: ``sample(entity, fields) -> fields``, the kit's generated values adjusted to
what the CRM stores (the ``sql`` driver gives boolean and number columns such values).

A driver is made by a factory ``(config, adapter) -> driver``; :data:`DRIVERS` names
the shipped ones by kind, and ``--driver module:factory`` picks another.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Protocol

from adapters.base import Adapter
from router.adapter_config import AdapterConfig
from router.errors import ConfigError
from router.events import Scalar


class KitSetupError(Exception):
    """The kit cannot run a check on this adapter as configured (says what to change)."""


class CrmDriver(Protocol):
    def insert(self, entity: str, fields: dict[str, Scalar]) -> str: ...

    def update(self, entity: str, source_record_id: str, fields: dict[str, Scalar]) -> None: ...

    def delete(self, entity: str, source_record_id: str) -> None: ...

    def refused(self, entity: str) -> dict[str, Scalar]: ...

    def outage(self) -> AbstractContextManager[None]: ...

    def close(self) -> None: ...


DriverFactory = Callable[[AdapterConfig, Adapter], CrmDriver]

# The driver of each shipped kind ("module:factory"). A new kind adds its row here.
DRIVERS: dict[str, str] = {
    "sql": "adapters.kit.sql_driver:SqlDriver",
    "file": "adapters.kit.file_driver:FileDriver",
    # hubspot and plugins: a driver bound to the CRM the test runs (a fake server);
    # tests/integration/kit_cases.py has them, passed as ``driver=factory``.
}


def load_factory(spec: str) -> DriverFactory:
    """``"package.module:name"`` -> the factory it names."""
    module, _, name = spec.partition(":")
    if not module or not name:
        raise ConfigError(f"--driver {spec!r}: give module:factory")
    try:
        factory: DriverFactory = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"--driver {spec!r}: {e}") from None
    return factory


def driver_for(
    config: AdapterConfig, adapter: Adapter, spec: str | DriverFactory | None = None
) -> CrmDriver:
    """The driver ``spec`` names (``module:factory``) or is (a factory: a test's own, bound
    to its fake CRM server), else the kind's from :data:`DRIVERS`."""
    if callable(spec):
        return spec(config, adapter)
    if spec is None:
        spec = DRIVERS.get(config.kind)
        if spec is None:
            raise ConfigError(
                f"no conformance driver for kind = {config.kind!r}: pass --driver module:factory"
            )
    return load_factory(spec)(config, adapter)
