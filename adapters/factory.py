"""One adapter per ``kind``: the only place that knows every kind's class.

Imports are lazy so an adapter process loads only its own kind's dependencies (an HTTP
client for ``hubspot``, a database driver for ``sql``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from adapters.base import Adapter
from router.adapter_config import AdapterConfig
from router.errors import ConfigError


def make_adapter(config: AdapterConfig, where: str = "adapter config") -> Adapter:
    """The adapter ``config.kind`` names; a bad setting raises ConfigError naming its key."""
    if config.kind == "hubspot":
        from adapters.hubspot.adapter import HubspotAdapter

        return HubspotAdapter(config, where=where)
    if config.kind == "sql":
        from adapters.sql import SqlAdapter

        return SqlAdapter(config, where=where)
    if config.kind == "file":
        from adapters.file import FileAdapter

        return FileAdapter(config, where=where)
    if config.kind == "plugin":
        assert config.plugin is not None  # AdapterConfig: kind = "plugin" names its class
        return _plugin(config, config.plugin, where)
    raise NotImplementedError(f"kind = {config.kind!r} is not built yet")


def _plugin(config: AdapterConfig, spec: str, where: str) -> Adapter:
    """An adapter class of the user's own (docs/writing-an-adapter.md), constructed as
    ``Class(config, where=...)``: importable from the adapter process's Python path."""
    module_name, class_name = spec.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(
            f"{where}: plugin: cannot import {module_name!r} ({e}); install it or add it to "
            "PYTHONPATH"
        ) from None
    cls = getattr(module, class_name, None)
    if not isinstance(cls, type) or not issubclass(cls, Adapter):
        raise ConfigError(
            f"{where}: plugin: {spec!r} is not an Adapter subclass (adapters.base.Adapter)"
        )
    make: Callable[..., Adapter] = cls
    return make(config, where=where)
