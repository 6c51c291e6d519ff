"""Running every doctor check in order: the configs, the broker (and through it the
router), each adapter's CRM, the state stores. Each probe turns what it meets into
verdicts; only a bug escapes as an exception."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from router.adapter_config import AdapterConfig, load_adapter
from router.config import BrokerConfig, RouterConfig, load_router
from router.doctor.adapter_probe import adapter_checks
from router.doctor.broker_probe import broker_checks
from router.doctor.state_probe import adapter_state_check, router_state_check
from router.doctor.verdicts import Check, fail, ok
from router.errors import CrmsyncError


def adapter_files(folder: Path | None, files: Sequence[Path]) -> list[Path]:
    """The adapter configs to check: ``files``, then ``folder``'s ``*.toml``."""
    found = list(files)
    if folder is not None:
        found += sorted(p for p in folder.glob("*.toml") if p not in found)
    return found


def run_checks(
    config: Path | None,
    adapter_paths: Sequence[Path],
    management_url: str | None = None,
    status_timeout: float = 3.0,
) -> list[Check]:
    checks: list[Check] = []
    router: RouterConfig | None = None
    broker = BrokerConfig()
    if config is not None:
        try:
            router = load_router(config)
            broker = router.broker
            checks.append(ok(f"config {config}"))
        except CrmsyncError as e:
            checks.append(fail(f"config {config}", _without(str(e), config)))
    adapters: list[tuple[Path, AdapterConfig]] = []
    for path in adapter_paths:
        try:
            adapters.append((path, load_adapter(path)))
            checks.append(ok(f"config {path}"))
        except CrmsyncError as e:
            checks.append(fail(f"config {path}", _without(str(e), path)))
    if config is not None and router is None:
        # The defaults would name another broker than the one meant: say so instead.
        checks.append(fail("broker", f"not checked: {config} did not load"))
    else:
        checks += asyncio.run(
            broker_checks(broker, [a for _, a in adapters], management_url, status_timeout)
        )
    for path, cfg in adapters:
        checks += adapter_checks(cfg, path)
    if router is not None:
        checks.append(router_state_check(router.state.url))
    for _, cfg in adapters:
        checks.append(adapter_state_check(cfg.name, cfg.state.path))
    return checks


def _without(message: str, path: Path) -> str:
    """A config error without the file name the check's line already starts with."""
    return message.removeprefix(f"{path}: ")
