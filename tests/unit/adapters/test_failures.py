"""adapters.failures: where a failed delivery goes next, and what it carries."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.failures import error_for_status, history, next_hop
from router import topology
from router.errors import PermanentWriteError, TransientWriteError

TIERS = [("1s", 1.0), ("10s", 10.0), ("1m", 60.0)]


def test_first_transient_failure_goes_to_the_first_tier_with_history() -> None:
    hop = next_hop("sales", {"x-record-key": "r1"}, TransientWriteError("locked"), TIERS, now=100.0)
    assert not hop.dead
    assert (hop.exchange, hop.routing_key) == (topology.RETRY, "sales.1s")
    assert hop.headers[topology.ATTEMPTS_HEADER] == 1
    assert hop.headers[topology.ERROR_TYPE_HEADER] == "transient"
    assert hop.headers[topology.ERROR_HEADER] == "locked"  # the type is in error-type
    assert hop.headers[topology.TARGET_HEADER] == "sales"
    assert hop.headers[topology.FIRST_FAILED_HEADER] == 100_000  # epoch ms
    assert hop.headers[topology.LAST_FAILED_HEADER] == 100_000
    assert hop.headers[topology.RECORD_KEY_HEADER] == "r1"
    assert hop.expiration is not None and 1.0 <= hop.expiration <= 1.0 * (1 + topology.RETRY_JITTER)


def test_attempts_walk_the_tiers_then_dead_letter_keeping_first_failure_time() -> None:
    headers: dict[str, object] = {}
    seen = []
    for n in range(len(TIERS) + 1):
        hop = next_hop("sales", headers, TransientWriteError("down"), TIERS, now=10.0 + n)
        seen.append(hop.routing_key)
        headers = {**hop.headers, "x-death": [{"queue": "x"}], "x-delivery-count": 3}
    assert seen == [
        "sales.1s",
        "sales.10s",
        "sales.1m",
        "sales.dead",
    ]
    assert hop.dead and hop.exchange == topology.RETRY
    assert hop.headers[topology.ATTEMPTS_HEADER] == 4
    assert hop.headers[topology.FIRST_FAILED_HEADER] == 10_000
    assert hop.headers[topology.LAST_FAILED_HEADER] == 13_000
    assert "x-death" not in hop.headers and "x-delivery-count" not in hop.headers


def test_permanent_error_is_dead_lettered_at_once() -> None:
    err = PermanentWriteError("IntegrityError: CHECK constraint failed: mail_not_blocked")
    hop = next_hop("sales", None, err, TIERS)
    assert hop.dead
    assert hop.headers[topology.ERROR_TYPE_HEADER] == "permanent"
    assert "mail_not_blocked" in hop.headers[topology.ERROR_HEADER]
    assert hop.headers[topology.ATTEMPTS_HEADER] == 1


def test_unknown_errors_count_as_transient_and_kind_can_be_forced() -> None:
    unknown = next_hop("s", None, KeyError("boom"), TIERS)
    assert not unknown.dead
    assert unknown.headers[topology.ERROR_HEADER] == "KeyError: 'boom'"  # foreign: named
    hop = next_hop("s", None, ValueError("bad bytes"), TIERS, kind="undecodable")
    assert hop.dead and hop.headers[topology.ERROR_TYPE_HEADER] == "undecodable"


def test_no_tiers_means_dead_letter_on_first_failure() -> None:
    assert next_hop("s", None, TransientWriteError("x"), []).dead


def test_traceback_and_error_are_bounded() -> None:
    try:
        raise TransientWriteError("y" * 10_000)
    except TransientWriteError as e:
        hop = next_hop("s", None, e, TIERS)
    assert len(hop.headers[topology.ERROR_HEADER]) <= 500
    assert len(hop.headers[topology.TRACEBACK_HEADER]) <= topology.TRACEBACK_LIMIT
    assert (
        "Traceback" in hop.headers[topology.TRACEBACK_HEADER]
        or "Error" in hop.headers[topology.TRACEBACK_HEADER]
    )


def test_history_drops_broker_headers_and_bcc_but_keeps_ours_and_plain_ones() -> None:
    kept = history(
        {
            "x-death": [],
            "x-first-death-queue": "q",
            "x-delivery-count": 2,
            "BCC": ["a"],
            "x-crmsync-attempts": 2,
            "x-record-key": "r",
            "trace-id": "t",
        }
    )
    assert kept == {"x-crmsync-attempts": 2, "x-record-key": "r", "trace-id": "t"}


@given(st.floats(min_value=0.001, max_value=3600), st.integers(min_value=0, max_value=2**32))
def test_jitter_never_shortens_the_budget(delay: float, seed: int) -> None:
    hop = next_hop("s", None, TransientWriteError("x"), [("t", delay)], rng=random.Random(seed))
    assert hop.expiration is not None
    assert delay <= hop.expiration <= delay * (1 + topology.RETRY_JITTER)
    # and the tier queue's TTL cap is above every jittered expiry
    (spec,) = [q for q in topology.adapter_queues("s", [("t", delay)]) if "retry" in q.name]
    assert spec.arguments["x-message-ttl"] >= hop.expiration * 1000


@pytest.mark.parametrize("attempts", [0, 1, 2])
def test_attempt_counter_comes_from_our_header_only(attempts: int) -> None:
    headers = {topology.ATTEMPTS_HEADER: attempts, "x-delivery-count": 40}
    hop = next_hop("s", headers, TransientWriteError("x"), TIERS)
    assert hop.headers[topology.ATTEMPTS_HEADER] == attempts + 1


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (429, TransientWriteError),
        (408, TransientWriteError),
        (500, TransientWriteError),
        (503, TransientWriteError),
        (400, PermanentWriteError),
        (404, PermanentWriteError),
        (409, PermanentWriteError),
        (422, PermanentWriteError),
    ],
)
def test_http_statuses_are_classified(status: int, kind: type[Exception]) -> None:
    err = error_for_status(status, "from the CRM")
    assert type(err) is kind
    assert str(err) == f"HTTP {status}: from the CRM"


def test_a_success_status_is_not_an_error() -> None:
    with pytest.raises(ValueError):
        error_for_status(200, "ok")
