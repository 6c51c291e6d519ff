"""``crmsync adapter conformance``: the suite's pytest module on one config, one line
per check."""

from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from adapters.kit import conformance
from adapters.kit.checks import CheckFailed


@dataclass(frozen=True)
class Outcome:
    check: str
    passed: bool
    detail: str  # what it measured, or what went wrong


class _Collect:
    """A pytest plugin keeping each check's outcome and one-line reason."""

    def __init__(self) -> None:
        self.outcomes: list[Outcome] = []
        self.setup_error: str | None = None

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: Any, call: Any) -> Any:
        yield
        check = item.callspec.id if hasattr(item, "callspec") else item.name
        if call.when == "setup" and call.excinfo is not None:
            self.setup_error = _reason(call.excinfo.value)
        elif call.when == "call":
            if call.excinfo is None:
                detail = dict(item.user_properties).get("detail", "ok")
                self.outcomes.append(Outcome(check, True, str(detail)))
            else:
                self.outcomes.append(Outcome(check, False, _reason(call.excinfo.value)))


def _reason(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    first = text[0] if text else ""
    if isinstance(err, CheckFailed):
        return first
    return f"{type(err).__name__}: {first}"


def run(
    config: Path,
    driver: str | None = None,
    entity: str | None = None,
    patience: float | None = None,
) -> list[Outcome]:
    """Every check on ``config``; a setup failure (bad config, no driver) is one outcome
    named ``setup``."""
    env = {conformance.CONFIG_ENV: str(config)}
    if driver:
        env[conformance.DRIVER_ENV] = driver
    if entity:
        env[conformance.ENTITY_ENV] = entity
    if patience is not None:
        env[conformance.PATIENCE_ENV] = str(patience)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    collect = _Collect()
    shown = io.StringIO()
    try:
        with contextlib.redirect_stdout(shown):  # the outcomes are reported, not pytest's dots
            code = pytest.main(
                [conformance.__file__, "-q", "-p", "no:cacheprovider", "--no-header", "--tb=no"],
                plugins=[collect],
            )
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    if collect.setup_error is not None and not collect.outcomes:
        return [Outcome("setup", False, collect.setup_error)]
    if not collect.outcomes:
        last = shown.getvalue().strip().splitlines()
        return [Outcome("setup", False, f"pytest exit {code}: {last[-1] if last else ''}")]
    return collect.outcomes
