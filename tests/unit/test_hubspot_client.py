"""The HubSpot client's classification and retries, on httpx's mock transport (no
sockets): what is retried, what is transient after retries, what is permanent, what is
data; the token file's checks; the token in no log line or error."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY

from adapters.hubspot.client import HubspotClient, read_token
from adapters.hubspot.limiter import DailyCapReached, RequestLimiter
from router.errors import ConfigError, PermanentWriteError, TransientWriteError

TOKEN = "pat-na1-very-secret-token"


def _client(
    handler: Callable[[httpx.Request], httpx.Response],
    slept: list[float],
    attempts: int = 4,
    adapter: str = "hubspot",
) -> HubspotClient:
    now = [1_000_000.0]

    def sleep(seconds: float) -> None:  # virtual time: sleeping moves the clock
        slept.append(seconds)
        now[0] += seconds

    limiter = RequestLimiter(1000, 100_000, clock=lambda: now[0], sleep=sleep, adapter=adapter)
    return HubspotClient(
        "https://api.example.test",
        TOKEN,
        limiter,
        timeout="5s",
        sleep=sleep,
        max_attempts=attempts,
        transport=httpx.MockTransport(handler),
        adapter=adapter,
    )


def _answers(*responses: httpx.Response) -> Callable[[httpx.Request], httpx.Response]:
    queue = list(responses)

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"] == f"Bearer {TOKEN}"
        return queue.pop(0)

    return handler


LIMITED = {
    "X-HubSpot-RateLimit-Remaining": "0",
    "X-HubSpot-RateLimit-Interval-Milliseconds": "10000",
}


def test_429_waits_as_the_headers_say_then_succeeds() -> None:
    slept: list[float] = []
    throttled = httpx.Response(
        429,
        headers={**LIMITED, "Retry-After": "2"},
        json={"policyName": "TEN_SECONDLY_ROLLING", "errorType": "RATE_LIMIT"},
    )
    client = _client(_answers(throttled, httpx.Response(200, json={"ok": 1})), slept)
    assert client.post("/x", {}).body == {"ok": 1}
    assert client.retries == 1
    # Retry-After (2 s) and the server's Remaining 0 for its 10 s interval: the limiter
    # holds the next request until the interval is over.
    assert sum(slept) >= 10


def test_usage_metrics_count_outcomes_and_waits() -> None:
    name = "metrics-probe"
    responses = [
        httpx.Response(429, headers=LIMITED, json={"policyName": "TEN_SECONDLY_ROLLING"}),
        httpx.Response(503, json={}),
        httpx.Response(200, json={}),
    ]
    _client(_answers(*responses), [], adapter=name).post("/x", {})

    def sample(metric: str, **labels: str) -> float | None:
        return REGISTRY.get_sample_value(metric, {"adapter": name, **labels})

    for outcome in ("throttled", "server_error", "ok"):
        assert sample("crmsync_adapter_api_requests_total", outcome=outcome) == 1
    waited = sample("crmsync_adapter_api_throttled_seconds_total")
    assert waited is not None and waited >= 9  # the 429's interval, held by the budget


def test_5xx_and_dropped_connections_are_transient_after_retries() -> None:
    slept: list[float] = []
    client = _client(_answers(*[httpx.Response(502, json={})] * 4), slept)
    with pytest.raises(TransientWriteError, match="502"):
        client.get("/x")
    assert slept == [0.25, 0.5, 1.0]  # exponential back-off between the 4 attempts

    def drop(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(TransientWriteError, match="ConnectError"):
        _client(drop, []).get("/x")


def test_validation_and_auth_errors_are_permanent_and_409_is_data() -> None:
    bad = httpx.Response(
        400, json={"category": "VALIDATION_ERROR", "message": "Email address ada@x is invalid"}
    )
    with pytest.raises(PermanentWriteError, match="400 VALIDATION_ERROR") as invalid:
        _client(_answers(bad), []).post("/x", {})
    # HubSpot's text (it quotes the value) is for the DLQ; logs get the category only.
    assert "ada@x" in str(invalid.value)
    assert vars(invalid.value)["log_text"] == "HubSpot VALIDATION_ERROR"
    denied = httpx.Response(401, json={"category": "INVALID_AUTHENTICATION"})
    with pytest.raises(PermanentWriteError, match=r"check api\.token_file"):
        _client(_answers(denied), []).post("/x", {})
    conflict = httpx.Response(409, json={"category": "CONFLICT", "message": "Existing ID: 7"})
    answer = _client(_answers(conflict), []).post("/x", {}, conflict_ok=True)
    assert answer.status == 409 and answer.body["message"].endswith("7")
    with pytest.raises(PermanentWriteError, match="409"):
        _client(_answers(conflict), []).post("/x", {})


def test_daily_429_is_not_retried() -> None:
    daily = httpx.Response(429, json={"policyName": "DAILY", "message": "daily limit"})
    slept: list[float] = []
    client = _client(_answers(daily), slept)
    with pytest.raises(DailyCapReached, match="daily request cap reached"):
        client.post("/x", {})
    assert slept == []
    with pytest.raises(DailyCapReached):  # nothing more is sent today
        client.get("/y")


def test_token_file_checks_name_the_key(tmp_path: Path) -> None:
    path = tmp_path / "token"
    with pytest.raises(ConfigError, match=r"api\.token_file cannot be read"):
        read_token(path, "hubspot.toml")
    path.write_text("  \n")
    path.chmod(0o600)
    with pytest.raises(ConfigError, match=r"api\.token_file is empty"):
        read_token(path, "hubspot.toml")
    path.write_text(TOKEN + "\n")
    path.chmod(0o644)
    with pytest.raises(ConfigError, match=r"api\.token_file is readable by every user"):
        read_token(path, "hubspot.toml")
    path.chmod(0o600)
    assert read_token(path, "hubspot.toml") == TOKEN


def test_token_never_in_logs_or_errors(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    errors: list[str] = []
    responses = [
        httpx.Response(503, json={"message": "down"}),
        httpx.Response(401, json={"category": "INVALID_AUTHENTICATION"}),
    ]
    client = _client(_answers(*responses), [])
    try:
        client.post("/x", {"inputs": []})
    except PermanentWriteError as e:
        errors.append(str(e))
    assert errors and caplog.records
    text = " ".join(errors) + " ".join(
        f"{r.getMessage()} {getattr(r, 'kv', '')}" for r in caplog.records
    )
    assert TOKEN not in text and "Bearer" not in text
