"""One adapter per ``kind``: the only place that knows every kind's class.

Imports are lazy so an adapter process loads only its own kind's dependencies (an HTTP
client for ``hubspot``, a database driver for ``sql``).
"""

from __future__ import annotations

from adapters.base import Adapter
from router.adapter_config import AdapterConfig


def make_adapter(config: AdapterConfig, where: str = "adapter config") -> Adapter:
    """The adapter ``config.kind`` names; a bad setting raises ConfigError naming its key."""
    if config.kind == "hubspot":
        from adapters.hubspot.adapter import HubspotAdapter

        return HubspotAdapter(config, where=where)
    if config.kind == "sql":
        from adapters.sql import SqlAdapter

        return SqlAdapter(config, where=where)
    raise NotImplementedError(f"kind = {config.kind!r} is not built yet")
