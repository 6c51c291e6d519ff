"""The conformance suite as a pytest module: one test per check, on one adapter config.

Run by ``crmsync adapter conformance CONFIG.toml`` (:mod:`adapters.kit.runner`), or
directly::

    CRMSYNC_KIT_CONFIG=config/adapters/mine.toml pytest adapters/kit/conformance.py

``CRMSYNC_KIT_DRIVER`` (``module:factory``) and ``CRMSYNC_KIT_ENTITY`` pick another
driver and entity, ``CRMSYNC_KIT_PATIENCE`` the seconds capture may take to see a
change. To run the checks for several configs in a suite of your own, use
:func:`adapters.kit.open_subject` and :data:`adapters.kit.CHECKS` (see
tests/integration/test_conformance.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from adapters.kit.checks import CHECKS
from adapters.kit.subject import PATIENCE, Subject, open_subject

CONFIG_ENV = "CRMSYNC_KIT_CONFIG"
DRIVER_ENV = "CRMSYNC_KIT_DRIVER"
ENTITY_ENV = "CRMSYNC_KIT_ENTITY"
PATIENCE_ENV = "CRMSYNC_KIT_PATIENCE"


@pytest.fixture(scope="module")
def subject(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Subject]:
    config = os.environ.get(CONFIG_ENV)
    if not config:
        pytest.fail(f"set {CONFIG_ENV} to the adapter config (TOML) to check")
    workdir = tmp_path_factory.mktemp("kit")
    patience = float(os.environ.get(PATIENCE_ENV) or PATIENCE)
    with open_subject(
        Path(config), workdir, os.environ.get(DRIVER_ENV), os.environ.get(ENTITY_ENV), patience
    ) as s:
        yield s


@pytest.mark.parametrize("check", list(CHECKS.values()), ids=list(CHECKS))
def test_conformance(
    subject: Subject, check: Callable[[Subject], str], record_property: Callable[[str, str], None]
) -> None:
    record_property("detail", check(subject))
