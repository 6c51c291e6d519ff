from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from tests.broker import amqp_url, broker_available, create_vhost, delete_vhost

# CI is a 2-core machine that also runs RabbitMQ, PostgreSQL and MariaDB: time spent
# generating inputs or running one example says nothing about correctness there. No
# example database: test processes run in parallel, and nothing under the work tree
# should change because tests ran.
settings.register_profile(
    "crmsync",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    database=None,
)
settings.load_profile("crmsync")


@pytest.fixture(scope="session")
def broker() -> None:
    """Fails (in CI) or skips (on a laptop without RabbitMQ) when the broker is missing."""
    problem = broker_available()
    if problem is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"integration tests need RabbitMQ and CI must have it: {problem}")
    pytest.skip(problem)


@pytest.fixture
def vhost(broker: None) -> Iterator[str]:
    name = create_vhost()
    try:
        yield name
    finally:
        delete_vhost(name)


@pytest.fixture
def amqp(vhost: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The AMQP URL of this test's own vhost, also exported as CRMSYNC_AMQP_URL."""
    url = amqp_url(vhost)
    monkeypatch.setenv("CRMSYNC_AMQP_URL", url)
    return url
