"""The fault suite's checker finds each kind of damage in a synthetic history, and the
half-open proxy silences a connection without closing it."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from router import topology
from tests.faults.checker import Row, Write, check, dlq_problems, fold
from tests.faults.proxy import Proxy

MAPPED = {"a": ["first_name", "last_name"], "b": ["first_name", "last_name"]}
HISTORY = [
    Write(1, "a", "k1", "insert", {"first_name": "Ada", "last_name": "L"}),
    Write(2, "b", "k1", "update", {"first_name": "Ada2"}),
    Write(3, "a", "k2", "insert", {"first_name": "Bob", "last_name": "M"}),
    Write(4, "a", "k3", "insert", {"first_name": "Cy", "last_name": "N"}),
    Write(5, "b", "k3", "delete"),
]
GOOD = [
    Row("k1", {"first_name": "Ada2", "last_name": "L"}),
    Row("k2", {"first_name": "Bob", "last_name": "M"}),
]


def test_a_converged_history_is_clean() -> None:
    verdict = check(HISTORY, {"a": GOOD, "b": GOOD}, MAPPED, accepted=5)
    assert verdict.clean, verdict.problems
    assert fold(HISTORY)["k3"].alive is False


def test_a_missing_record_and_a_missed_delete_are_lost() -> None:
    rows = [GOOD[0], Row("k3", {"first_name": "Cy", "last_name": "N"})]
    verdict = check(HISTORY, {"a": GOOD, "b": rows}, MAPPED)
    assert (verdict.lost, verdict.duplicated, verdict.stale) == (2, 0, 0)
    assert any("k2 missing in b" in p for p in verdict.problems)
    assert any("delete of k3" in p for p in verdict.problems)


def test_a_value_nobody_wrote_last_is_lost() -> None:
    rows = [Row("k1", {"first_name": "Zed", "last_name": "L"}), GOOD[1]]
    assert check(HISTORY, {"a": GOOD, "b": rows}, MAPPED).lost == 1


def test_a_record_created_twice_or_by_nobody_is_duplicated() -> None:
    twice = [*GOOD, GOOD[1]]
    phantom = [*GOOD, Row("k9", {"first_name": "X", "last_name": "Y"})]
    verdict = check(HISTORY, {"a": twice, "b": phantom}, MAPPED)
    assert (verdict.lost, verdict.duplicated, verdict.stale) == (0, 2, 0)


def test_more_accepted_changes_than_user_writes_is_a_duplicated_effect() -> None:
    assert check(HISTORY, {"a": GOOD, "b": GOOD}, MAPPED, accepted=7).duplicated == 2
    # coalesced edits (fewer accepted than written) are fine
    assert check(HISTORY, {"a": GOOD, "b": GOOD}, MAPPED, accepted=3).clean


def test_an_overwritten_value_that_won_is_stale() -> None:
    rows = [Row("k1", {"first_name": "Ada", "last_name": "L"}), GOOD[1]]
    verdict = check(HISTORY, {"a": GOOD, "b": rows}, MAPPED)
    assert (verdict.lost, verdict.duplicated, verdict.stale) == (0, 0, 1)
    assert verdict.problems == ["stale: b k1.first_name holds an overwritten value"]


def test_unmapped_fields_are_not_judged() -> None:
    history = [Write(1, "a", "k", "insert", {"first_name": "A", "phone": "1"})]
    rows = [Row("k", {"first_name": "A"})]
    assert check(history, {"b": rows}, {"b": ["first_name"]}).clean


def test_dlq_entries_without_their_metadata_are_reported() -> None:
    full = {
        h: 1
        for h in (
            topology.TARGET_HEADER,
            topology.ATTEMPTS_HEADER,
            topology.ERROR_TYPE_HEADER,
            topology.FIRST_FAILED_HEADER,
            topology.LAST_FAILED_HEADER,
        )
    }
    entries = [
        ("crmsync.dlq.a", full),
        ("crmsync.dlq.a", {topology.TARGET_HEADER: "a"}),
        (topology.INVALID, {topology.REASON_HEADER: "poison"}),
        (topology.INVALID, {"x-death": []}),
        (topology.INVALID, {}),
    ]
    problems = dlq_problems(entries)
    assert len(problems) == 2
    assert "x-crmsync-attempts" in problems[0]
    assert topology.INVALID in problems[1]


@pytest.fixture
def echo_port() -> Iterator[int]:
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            threading.Thread(target=_echo, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield int(server.getsockname()[1])
    stop.set()
    thread.join()
    server.close()


def _echo(conn: socket.socket) -> None:
    with conn:
        while data := conn.recv(4096):
            conn.sendall(data)


def test_the_proxy_forwards_goes_silent_without_closing_and_heals(echo_port: int) -> None:
    proxy = Proxy(echo_port).start()
    try:
        client = socket.create_connection(("127.0.0.1", proxy.port), timeout=2)
        client.sendall(b"ping")
        assert client.recv(4) == b"ping"

        proxy.half_open()
        client.sendall(b"lost")
        client.settimeout(0.5)
        with pytest.raises(TimeoutError):  # silence, not a close (recv would return b"")
            client.recv(4)
        assert proxy.open_before_silence() == 1

        proxy.heal()
        client.settimeout(2)
        client.sendall(b"back")
        assert client.recv(4) == b"back"

        proxy.half_open()
        time.sleep(0.2)
        client.close()  # the client gave up (its heartbeat timed out)
        deadline = time.monotonic() + 2
        while not proxy.detections() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(proxy.detections()) == 1
        assert 0.2 <= proxy.detections()[0] < 2
    finally:
        proxy.close()
