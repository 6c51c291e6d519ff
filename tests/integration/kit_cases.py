"""Conformance-kit cases for the adapters whose CRM is a fake server the tests run:
HubSpot (tests/fakes/hubspot.py) and the TinyCRM plugin of docs/writing-an-adapter.md
(tests/fakes/tinycrm.py). Each brings a CRM driver bound to its fake: a HubSpot or
TinyCRM user's edits made behind the API, a value the CRM refuses, and an outage."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

from adapters.base import Adapter
from adapters.kit.driver import CrmDriver, DriverFactory
from router.adapter_config import AdapterConfig
from router.events import Scalar
from tests.fakes.hubspot import FakeHubSpot, hubspot_server
from tests.fakes.tinycrm import TinyCrm, tinycrm_server

DOC = Path(__file__).resolve().parents[2] / "docs" / "writing-an-adapter.md"
NAMES = {"email": "email", "first_name": "firstname", "last_name": "lastname"}


class Kit(NamedTuple):
    """One conformance case: the adapter config and how the kit drives its CRM."""

    config: AdapterConfig
    entity: str | None = None  # the entity to check (None: the first)
    driver: DriverFactory | None = None  # None: the kind's from adapters.kit.DRIVERS


def _token(tmp: Path, token: str) -> str:
    path = tmp / "crm.token"
    path.write_text(token + "\n")
    os.chmod(path, 0o600)
    return str(path)


class HubSpotDriver:
    def __init__(self, fake: FakeHubSpot) -> None:
        self.fake = fake

    def _props(self, fields: dict[str, Scalar]) -> dict[str, str]:
        return {NAMES[k]: "" if v is None else str(v) for k, v in fields.items() if k in NAMES}

    def insert(self, entity: str, fields: dict[str, Scalar]) -> str:
        with self.fake.lock:  # a user's create in the HubSpot UI: no API, no budget
            return self.fake.store.create(self._props(fields)).id

    def update(self, entity: str, source_record_id: str, fields: dict[str, Scalar]) -> None:
        self.fake.edit(source_record_id, **self._props(fields))

    def delete(self, entity: str, source_record_id: str) -> None:
        self.fake.delete(source_record_id)  # archive, as the UI does

    def refused(self, entity: str) -> dict[str, Scalar]:
        return {"email": "not-an-address"}  # 400 INVALID_EMAIL

    @contextmanager
    def outage(self) -> Iterator[None]:
        with self.fake.lock:
            self.fake.failures.extend([503] * 1000)
        try:
            yield
        finally:
            with self.fake.lock:
                self.fake.failures.clear()

    def close(self) -> None:
        pass


@contextmanager
def hubspot(tmp: Path, rate: str) -> Iterator[Kit]:
    with hubspot_server(per_10s=10_000) as fake:
        config = AdapterConfig.model_validate(
            {
                "name": "kit-hubspot",
                "kind": "hubspot",
                # A lag of 0 on the fake: search is current, capture sees changes at once.
                "api": {
                    "base_url": fake.base_url,
                    "token_file": _token(tmp, fake.token),
                    "search_lag": "0s",
                    "requests_per_10s": 10_000,
                },
                "write": {"rate": rate},
                "entities": {"contact": {"object": "contacts", "fields": NAMES}},
            }
        )

        def driver(_config: AdapterConfig, _adapter: Adapter) -> CrmDriver:
            return HubSpotDriver(fake)

        yield Kit(config, "contact", driver)


class TinyCrmDriver:
    def __init__(self, crm: TinyCrm) -> None:
        self.crm = crm

    @staticmethod
    def _values(fields: dict[str, Scalar]) -> dict[str, Any]:
        out: dict[str, Any] = {k: fields[k] for k in ("email", "phone") if k in fields}
        if "first_name" in fields or "last_name" in fields:
            out["name"] = f"{fields.get('first_name') or ''} {fields.get('last_name') or ''}"
        return out

    def insert(self, entity: str, fields: dict[str, Scalar]) -> str:
        return str(self.crm.user_create(**self._values(fields)))

    def update(self, entity: str, source_record_id: str, fields: dict[str, Scalar]) -> None:
        self.crm.user_update(int(source_record_id), **self._values(fields))

    def delete(self, entity: str, source_record_id: str) -> None:
        self.crm.user_delete(int(source_record_id))

    def refused(self, entity: str) -> dict[str, Scalar]:
        return {"email": "x@@bad"}  # 422 {"field": "email", "code": "invalid"}

    @contextmanager
    def outage(self) -> Iterator[None]:
        self.crm.throttle_next(1000, retry_after=0.01)  # over its limit for a while
        try:
            yield
        finally:
            self.crm.throttle_next(0)

    def close(self) -> None:
        pass


@contextmanager
def tinycrm(tmp: Path, rate: str) -> Iterator[Kit]:
    """The doc's TinyCRM adapter, run as written (kind = "plugin")."""
    (code,) = [
        b
        for b in re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
        if "class TinyCrmAdapter" in b
    ]
    (tmp / "tinycrm_adapter.py").write_text(code)
    sys.path.insert(0, str(tmp))
    try:
        with tinycrm_server() as crm:
            config = AdapterConfig.model_validate(
                {
                    "name": "kit-tinycrm",
                    "kind": "plugin",
                    "plugin": "tinycrm_adapter:TinyCrmAdapter",
                    "options": {"base_url": crm.base_url, "token_file": _token(tmp, crm.token)},
                    "write": {"rate": rate},
                    "entities": {
                        "contact": {
                            "object": "people",
                            "fields": {"email": "email", "phone": "phone"},
                            "names": {"column": "name"},
                        }
                    },
                }
            )

            def driver(_config: AdapterConfig, _adapter: Adapter) -> CrmDriver:
                return TinyCrmDriver(crm)

            yield Kit(config, "contact", driver)
    finally:
        sys.path.remove(str(tmp))
        sys.modules.pop("tinycrm_adapter", None)
