"""``crmsync dlq`` against the real RabbitMQ, run as a subprocess on the test's own vhost.

Entries are published straight to ``crmsync.dead`` with aio-pika, as the adapters do
(including a garbage body and a poison message the broker dead-lettered, which carries
only ``x-death``). Issue 4's acceptance: listing twice shows the same counts and order,
``show`` works for every id, ``replay --all`` delivers each entry exactly once and
empties the DLQ, and killing a replay mid-way loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from router import topology
from router.broker.aio import Connection
from router.broker.dlq import DlqBroker
from router.config import BrokerConfig
from router.events import ChangeEvent, decode, encode
from tests.integration.cli_runner import (
    Result,
    arun_cli,
    assert_one_clear_line,
    cli_env,
    run_cli,
)
from tests.integration.support import (
    collect,
    depth,
    publish_event,
    register,
    start_router,
    stop_router,
)
from tests.integration.support import event as event_map

pytestmark = pytest.mark.integration

DLQ = topology.dlq_queue("sales")
SINK = topology.sink_queue("sales")
CHECK = "IntegrityError: CHECK constraint failed: email_domain"
LOCKED = "OperationalError: database is locked after 5000 ms"
GARBAGE = b"\xc1garbage\x00\xff"
UNREACHABLE = "amqp://guest:secret@127.0.0.1:1/"


def dlq_cli(amqp: str, *args: str) -> Result:
    return run_cli("dlq", *args, amqp=amqp)


async def adlq_cli(amqp: str, *args: str) -> Result:
    return await arun_cli("dlq", *args, amqp=amqp)


def listed(amqp: str, *args: str) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = dlq_cli(
        amqp, "list", "--adapter", "sales", "--json", *args
    ).json()["entries"]
    return entries


# -- seeding ----------------------------------------------------------------------------


def make_event(email: str) -> ChangeEvent:
    return ChangeEvent(
        event_id=str(uuid.uuid4()),
        source="legacy",
        actor="legacy",
        entity="contact",
        record_id=str(uuid.uuid4()),
        op="upsert",
        clock={"legacy": 3},
        fields={"email": email, "first_name": "Ann"},
        changed=["email"],
        occurred_at=datetime.now(UTC),
    )


def failure(kind: str, error: str, attempts: int, at: float) -> dict[str, Any]:
    return {
        topology.TARGET_HEADER: "sales",
        topology.ATTEMPTS_HEADER: attempts,
        topology.ERROR_TYPE_HEADER: kind,
        topology.ERROR_HEADER: error,
        topology.TRACEBACK_HEADER: f"Traceback (most recent call last):\n  File 'x'\n{error}",
        topology.FIRST_FAILED_HEADER: int((at - 60.0) * 1000),  # epoch ms, as adapters write
        topology.LAST_FAILED_HEADER: int(at * 1000),
    }


def broker_poison(at: float) -> dict[str, Any]:
    """What RabbitMQ 3.10 leaves on a message the sink's delivery limit dead-lettered."""
    return {
        "x-death": [
            {
                "count": 1,
                "reason": "delivery_limit",
                "queue": SINK,
                "time": datetime.fromtimestamp(at, UTC),
                "exchange": "",
                "routing-keys": [SINK],
            }
        ],
        "x-first-death-reason": "delivery_limit",
        "x-first-death-queue": SINK,
        "x-first-death-exchange": "",
    }


async def publish_dead(
    amqp: str,
    entries: list[tuple[bytes, dict[str, Any]]],
    *,
    confirm: bool = True,
    queue: str | None = None,
) -> None:
    """Declare the hub and ``sales`` topology, then dead-letter ``entries`` in order."""
    connection = await aio_pika.connect_robust(amqp)
    try:
        await Connection(connection).declare(topology.adapter_queues("sales"))
        channel = await connection.channel(publisher_confirms=confirm)
        exchange = (
            channel.default_exchange
            if queue
            else await channel.get_exchange(topology.DEAD, ensure=False)
        )
        for body, headers in entries:
            message_id = None
            with contextlib.suppress(ValueError):
                message_id = decode(body).event_id
            await exchange.publish(
                aio_pika.Message(
                    body,
                    headers=headers,
                    message_id=message_id,
                    content_type="application/msgpack",
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                queue or "sales",
            )
        target = queue or DLQ
        deadline = time.monotonic() + 10
        while await depth(connection, target) < len(entries):
            assert time.monotonic() < deadline, f"{target} did not fill"
            await asyncio.sleep(0.05)
    finally:
        await connection.close()


@dataclass(frozen=True)
class Seeded:
    events: dict[str, ChangeEvent]  # id -> event, for the entries that decode
    ids: list[str]  # queue order
    headers: dict[str, dict[str, Any]]

    @property
    def garbage(self) -> str:
        return self.ids[2]

    @property
    def poison(self) -> str:
        return self.ids[4]


@pytest.fixture
def seeded(amqp: str) -> Seeded:
    now = time.time()
    bad1, locked, bad2, poisoned = (
        make_event(e) for e in ("a@bad.example", "c@ok.example", "b@bad.example", "d@ok.example")
    )
    entries = [
        (encode(bad1), failure("permanent", CHECK, 1, now - 300)),
        (encode(locked), failure("transient", LOCKED, 5, now - 200)),
        (GARBAGE, failure("undecodable", "DecodeError: undecodable: ExtraData", 1, now - 100)),
        (encode(bad2), failure("permanent", CHECK, 1, now - 50)),
        (encode(poisoned), broker_poison(now - 10)),
    ]
    asyncio.run(publish_dead(amqp, entries))
    garbage_id = "h-" + hashlib.sha256(GARBAGE).hexdigest()[:12]
    ids = [bad1.event_id, locked.event_id, garbage_id, bad2.event_id, poisoned.event_id]
    return Seeded(
        {e.event_id: e for e in (bad1, locked, bad2, poisoned)},
        ids,
        {i: headers for i, (_, headers) in zip(ids, entries, strict=True)},
    )


async def _drain(amqp: str, queue: str) -> list[aio_pika.abc.AbstractIncomingMessage]:
    connection = await aio_pika.connect_robust(amqp)
    try:
        channel = await connection.channel()
        count = await depth(connection, queue)
        return await collect(channel, queue, count)
    finally:
        await connection.close()


def drain(amqp: str, queue: str) -> list[aio_pika.abc.AbstractIncomingMessage]:
    return asyncio.run(_drain(amqp, queue))


# -- list / show ------------------------------------------------------------------------


def test_list_twice_shows_the_same_counts_and_order(amqp: str, seeded: Seeded) -> None:
    once = dlq_cli(amqp, "list", "--adapter", "sales", "--json")
    twice = dlq_cli(amqp, "list", "--adapter", "sales", "--json")
    assert once.stdout == twice.stdout  # absolute times only: byte for byte the same
    first, second, now = once.json(), twice.json(), time.time()

    assert [e["id"] for e in first["entries"]] == seeded.ids
    assert [e["id"] for e in second["entries"]] == seeded.ids
    assert first["queues"] == [{"queue": DLQ, "messages": 5, "browsed": 5}]
    groups = {g["key"]: g["ids"] for g in first["groups"]}
    assert groups == {g["key"]: g["ids"] for g in second["groups"]}
    assert groups[f"permanent: {CHECK}"] == [seeded.ids[0], seeded.ids[3]]
    assert groups["transient: OperationalError: database is locked after <n> ms"] == [seeded.ids[1]]
    assert first["groups"][0]["count"] == 2  # the largest group first

    by_id = {e["id"]: e for e in second["entries"]}
    # Browsing never touches crmsync's attempt counter.
    assert [by_id[i]["attempts"] for i in seeded.ids] == [1, 5, 1, 1, None]
    assert by_id[seeded.garbage]["decodes"] is False
    assert by_id[seeded.garbage]["entity"] is None
    poison = by_id[seeded.poison]
    assert (poison["error_type"], poison["adapter"]) == ("poison", "sales")
    assert now - 60 < poison["last_failed_at"] <= now - 5  # the broker's x-death time
    bad = by_id[seeded.ids[0]]
    assert bad["record_id"] == seeded.events[seeded.ids[0]].record_id
    assert (bad["entity"], bad["error"]) == ("contact", CHECK)

    human = dlq_cli(amqp, "list", "--adapter", "sales")
    assert human.code == 0, human
    assert f"{DLQ}: 5 entries" in human.stdout
    assert f"2 x permanent: {CHECK}" in human.stdout
    for entry_id in seeded.ids:
        assert entry_id in human.stdout

    by_entity = dlq_cli(amqp, "list", "-a", "sales", "--group-by", "entity", "--json").json()
    assert {g["key"]: g["count"] for g in by_entity["groups"]} == {
        "contact": 4,
        "(undecodable)": 1,
    }
    assert [e["id"] for e in listed(amqp)] == seeded.ids


def test_list_keeps_the_order_of_a_queue_deeper_than_the_default_prefetch(amqp: str) -> None:
    # Quorum queues deliver at most 2,000 messages to a consumer with prefetch 0, and
    # channel-close returns race a consumer that starts at once: both would show here.
    bodies = [f"entry {i:05d}".encode() for i in range(2100)]
    asyncio.run(publish_dead(amqp, [(b, {}) for b in bodies], confirm=False))
    expected = ["h-" + hashlib.sha256(b).hexdigest()[:12] for b in bodies]
    for _ in range(2):
        assert [e["id"] for e in listed(amqp)] == expected


def test_back_to_back_browses_on_one_connection_keep_the_order(amqp: str) -> None:
    # Closing a channel hands its unacked messages back asynchronously: a browse that
    # starts at once would get the later ones first, unless the previous one waited.
    bodies = [f"entry {i:03d}".encode() for i in range(300)]
    asyncio.run(publish_dead(amqp, [(b, {}) for b in bodies], confirm=False))
    expected = ["h-" + hashlib.sha256(b).hexdigest()[:12] for b in bodies]
    with DlqBroker(BrokerConfig(url=amqp)) as broker:
        for _ in range(3):
            assert [e.id for e in broker.browse(DLQ).entries] == expected
        with broker.hold(DLQ) as held:
            removed = held.entries[5::7]
            for entry in removed:
                held.remove(entry)
        gone = {e.id for e in removed}
        for _ in range(3):
            assert [e.id for e in broker.browse(DLQ).entries] == [
                i for i in expected if i not in gone
            ]


def test_a_command_on_a_queue_another_one_holds_says_so_and_changes_nothing(
    amqp: str, seeded: Seeded
) -> None:
    with DlqBroker(BrokerConfig(url=amqp)) as broker, broker.hold(DLQ) as held:
        assert [e.id for e in held.entries] == seeded.ids
        for command in (("list",), ("replay", "--all"), ("purge", "--all", "--yes")):
            line = assert_one_clear_line(dlq_cli(amqp, *command, "--adapter", "sales"))
            assert "being read by another consumer" in line
    assert [e["id"] for e in listed(amqp)] == seeded.ids


def test_show_every_entry(amqp: str, seeded: Seeded) -> None:
    for entry_id in seeded.ids:
        shown = dlq_cli(amqp, "show", entry_id, "--adapter", "sales", "--json").json()
        assert shown["id"] == entry_id
        assert shown["queue"] == DLQ
        headers = seeded.headers[entry_id]
        for key in (topology.ATTEMPTS_HEADER, topology.ERROR_HEADER, topology.ERROR_TYPE_HEADER):
            assert shown["headers"].get(key) == headers.get(key)
        if entry_id in seeded.events:
            assert shown["event"]["fields"] == seeded.events[entry_id].fields
            assert shown["body_base64"] is None
        else:
            assert shown["event"] is None
            assert shown["body_base64"] == "wWdhcmJhZ2UA/w=="
        assert shown["traceback"] == headers.get(topology.TRACEBACK_HEADER, "")

    human = dlq_cli(amqp, "show", seeded.ids[0][:8], "-a", "sales")
    assert human.code == 0, human
    for text in (seeded.ids[0], CHECK, "a@bad.example", "Traceback", "permanent"):
        assert text in human.stdout
    assert [e["id"] for e in listed(amqp)] == seeded.ids  # showing moved nothing


def test_the_router_invalid_queue_is_browsable(amqp: str) -> None:
    refused = make_event("x@example.com")
    headers = {topology.REASON_HEADER: "unregistered-source", topology.DETAIL_HEADER: "'legacy'"}
    asyncio.run(publish_dead(amqp, [(encode(refused), headers)], queue=topology.INVALID))

    data = dlq_cli(amqp, "list", "--invalid", "--json").json()
    (entry,) = data["entries"]
    assert (entry["id"], entry["adapter"]) == (refused.event_id, "router")
    assert entry["error_type"] == "unregistered-source"
    shown = dlq_cli(amqp, "show", refused.event_id, "--adapter", "router", "--json").json()
    assert shown["headers"][topology.DETAIL_HEADER] == "'legacy'"


# -- replay -----------------------------------------------------------------------------


def test_replay_all_delivers_each_entry_once_with_origin_replay(amqp: str, seeded: Seeded) -> None:
    result = dlq_cli(amqp, "replay", "--adapter", "sales", "--all")
    assert result.code == 0, result
    assert "replayed 4, skipped 1" in result.stdout
    assert seeded.garbage in result.stdout  # said why it was left

    delivered = drain(amqp, SINK)
    assert sorted(m.message_id or "" for m in delivered) == sorted(seeded.events)
    for message in delivered:
        original = seeded.events[message.message_id or ""]
        replayed = decode(message.body)
        assert replayed.origin == "replay"
        assert replayed.model_dump(exclude={"origin"}) == original.model_dump(exclude={"origin"})
        headers = dict(message.headers)
        assert headers[topology.RECORD_KEY_HEADER] == original.record_id
        assert "x-death" not in headers and "x-first-death-queue" not in headers
        sent = seeded.headers[original.event_id]
        # a fresh retry budget; the history and the replay count travel on
        assert headers[topology.ATTEMPTS_HEADER] == 0
        assert headers[topology.REPLAYS_HEADER] == 1
        assert headers.get(topology.ERROR_HEADER) == sent.get(topology.ERROR_HEADER)
        assert headers.get(topology.FIRST_FAILED_HEADER) == sent.get(topology.FIRST_FAILED_HEADER)

    assert [e["id"] for e in listed(amqp)] == [seeded.garbage]


def test_replaying_the_garbage_entry_is_refused_and_keeps_it(amqp: str, seeded: Seeded) -> None:
    line = assert_one_clear_line(dlq_cli(amqp, "replay", seeded.garbage, "--adapter", "sales"))
    assert seeded.garbage in line and "cannot be replayed" in line
    # Named together with a good one: refused before anything changes.
    assert_one_clear_line(dlq_cli(amqp, "replay", seeded.ids[0], seeded.garbage, "-a", "sales"))
    assert [e["id"] for e in listed(amqp)] == seeded.ids
    assert drain(amqp, SINK) == []


def test_replay_by_id_and_by_error_type(amqp: str, seeded: Seeded) -> None:
    result = dlq_cli(amqp, "replay", seeded.ids[1][:8], "--adapter", "sales")
    assert result.code == 0, result
    result = dlq_cli(amqp, "replay", "--adapter", "sales", "--error-type", "permanent")
    assert "replayed 2, skipped 0" in result.stdout, result
    assert sorted(m.message_id or "" for m in drain(amqp, SINK)) == sorted(
        seeded.ids[i] for i in (0, 1, 3)
    )
    assert [e["id"] for e in listed(amqp)] == [seeded.garbage, seeded.poison]


def test_replay_without_a_selection_and_dry_run_change_nothing(amqp: str, seeded: Seeded) -> None:
    line = assert_one_clear_line(dlq_cli(amqp, "replay", "--adapter", "sales"))
    assert "--all" in line
    dry = dlq_cli(amqp, "replay", "--adapter", "sales", "--all", "--dry-run")
    assert dry.code == 0, dry
    assert "dry run: would replay 4, skip 1; nothing changed" in dry.stdout
    assert [e["id"] for e in listed(amqp)] == seeded.ids
    assert drain(amqp, SINK) == []


def test_a_replay_the_broker_cannot_route_keeps_the_entry(amqp: str) -> None:
    lost = make_event("e@ok.example")
    headers = {**failure("permanent", CHECK, 1, time.time()), topology.TARGET_HEADER: "ghost"}
    asyncio.run(publish_dead(amqp, [(encode(lost), headers)]))
    line = assert_one_clear_line(dlq_cli(amqp, "replay", "--adapter", "sales", "--all"))
    assert "could not route" in line and lost.event_id in line
    assert [e["id"] for e in listed(amqp)] == [lost.event_id]


def test_killing_a_replay_midway_loses_nothing(amqp: str) -> None:
    events = [make_event(f"user{i}@ok.example") for i in range(1500)]
    headers = failure("permanent", CHECK, 1, time.time())
    asyncio.run(publish_dead(amqp, [(encode(e), headers) for e in events], confirm=False))
    with subprocess.Popen(
        [sys.executable, "-m", "router.cli", "dlq", "replay", "--adapter", "sales", "--all"],
        env=cli_env(amqp),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    ) as proc:
        assert proc.stdout is not None
        try:
            # One line per confirmed replay; unread, the pipe fills long before the end.
            for _ in range(20):
                assert proc.stdout.readline().startswith(b"replayed ")
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)

    async def settled() -> tuple[int, int]:
        connection = await aio_pika.connect_robust(amqp)
        try:
            deadline = time.monotonic() + 10
            while True:  # the broker takes the dead command's unacked entries back
                counts = await depth(connection, DLQ), await depth(connection, SINK)
                if sum(counts) >= len(events) or time.monotonic() > deadline:
                    return counts
                await asyncio.sleep(0.05)
        finally:
            await connection.close()

    in_dlq, in_sink = asyncio.run(settled())
    assert in_sink >= 20 and in_dlq > 0, (in_dlq, in_sink)  # killed mid-way
    delivered = [m.message_id for m in drain(amqp, SINK)]
    assert len(delivered) == len(set(delivered))
    kept = [e["id"] for e in listed(amqp)]
    assert set(kept) | set(delivered) == {e.event_id for e in events}
    # At most the one in flight is in both places (confirmed, not yet acked).
    assert len(set(kept) & set(delivered)) <= 1
    result = dlq_cli(amqp, "replay", "--adapter", "sales", "--all")
    assert result.code == 0, result
    assert listed(amqp) == []


# -- purge / export / edit --------------------------------------------------------------


def test_purge_refuses_without_a_terminal_then_removes_with_yes(amqp: str, seeded: Seeded) -> None:
    line = assert_one_clear_line(dlq_cli(amqp, "purge", "--adapter", "sales", "--all"))
    assert "--yes" in line
    assert [e["id"] for e in listed(amqp)] == seeded.ids

    result = dlq_cli(amqp, "purge", "-a", "sales", "--error-type", "permanent", "--yes")
    assert result.code == 0, result
    assert "purged 2 entries" in result.stdout
    assert [e["id"] for e in listed(amqp)] == [seeded.ids[i] for i in (1, 2, 4)]

    result = dlq_cli(amqp, "purge", seeded.garbage, "-a", "sales", "--yes")
    assert "purged 1 entry" in result.stdout, result
    assert [e["id"] for e in listed(amqp)] == [seeded.ids[1], seeded.poison]
    assert drain(amqp, SINK) == []


def test_export_jsonl(amqp: str, seeded: Seeded, tmp_path: Path) -> None:
    target = tmp_path / "dlq.jsonl"
    result = dlq_cli(amqp, "export", "--format", "jsonl", "--output", str(target), "-a", "sales")
    assert result.code == 0, result
    assert f"exported 5 entries (jsonl) to {target}" in result.stderr
    rows = [json.loads(line) for line in target.read_text().splitlines()]
    assert [r["id"] for r in rows] == seeded.ids
    for row in rows:
        assert row["adapter"] == "sales"
        assert isinstance(row["headers"], dict)
        if row["id"] == seeded.garbage:
            assert row["event"] is None and row["body_base64"]
        else:
            assert row["event"]["event_id"] == row["id"] and row["body_base64"] is None

    piped = dlq_cli(amqp, "export", "-a", "sales", "--error-type", "permanent")
    assert [json.loads(line)["id"] for line in piped.stdout.splitlines()] == [
        seeded.ids[0],
        seeded.ids[3],
    ]
    assert [e["id"] for e in listed(amqp)] == seeded.ids


async def test_edit_goes_through_the_router_and_then_removes_the_entry(
    amqp: str, tmp_path: Path
) -> None:
    router, task = await start_router(amqp, tmp_path / "router.db")
    connection = await aio_pika.connect_robust(amqp)
    try:
        await register(connection, "legacy")
        await register(connection, "sales")
        channel = await connection.channel()
        live = event_map("legacy", str(uuid.uuid4()), {"legacy": 1}, {"email": "a@bad.example"})
        await publish_event(channel, live)
        (delivery,) = await collect(channel, SINK, 1)  # what the sales adapter failed to write
        other = make_event("b@ok.example")
        await publish_dead(
            amqp,
            [
                (delivery.body, failure("permanent", CHECK, 1, time.time())),
                (encode(other), failure("permanent", CHECK, 1, time.time())),
                (GARBAGE, failure("undecodable", "x", 1, time.time())),
            ],
        )

        # Without --adapter: the router's registry names the DLQs.
        result = await adlq_cli(amqp, "edit", live["event_id"], "--set", "email=a@ok.example")
        assert result.code == 0, result
        assert "edited" in result.stdout
        for queue in (SINK, topology.sink_queue("legacy")):
            (version,) = await collect(channel, queue, 1)
            edited = decode(version.body)
            assert edited.fields["email"] == "a@ok.example"
            assert edited.record_id == live["record_id"]
            assert set(edited.clock) == {"legacy", "hub"}

        # The router does not know this record: one line, and the entry stays.
        refused = await adlq_cli(amqp, "edit", other.event_id, "--set", "email=x", "-a", "sales")
        line = assert_one_clear_line(refused)
        assert "no record" in line and other.event_id in line
        garbage = "h-" + hashlib.sha256(GARBAGE).hexdigest()[:12]
        assert_one_clear_line(
            await adlq_cli(amqp, "edit", garbage, "--set", "email=x", "-a", "sales")
        )
        left = await adlq_cli(amqp, "list", "--json")
        assert [e["id"] for e in left.json()["entries"]] == [other.event_id, garbage]
    finally:
        await connection.close()
        await stop_router(router, task)


# -- errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        ("show", "nope"),
        ("replay", "nope"),
        ("purge", "nope", "--yes"),
        ("edit", "nope", "--set", "email=x"),
        ("export", "nope"),
    ],
    ids=lambda c: c[0],
)
def test_an_unknown_id_is_one_line_and_changes_nothing(
    amqp: str, seeded: Seeded, command: tuple[str, ...]
) -> None:
    line = assert_one_clear_line(dlq_cli(amqp, *command, "--adapter", "sales"))
    assert line == f"crmsync: error: no entry nope in {DLQ}"
    assert [e["id"] for e in listed(amqp)] == seeded.ids


def test_unknown_queue_router_and_broker_are_one_line(amqp: str) -> None:
    line = assert_one_clear_line(dlq_cli(amqp, "list", "--adapter", "ghost"))
    assert "no queue crmsync.dlq.ghost" in line
    line = assert_one_clear_line(dlq_cli(amqp, "list"))  # no router has ever run on this vhost
    assert "--adapter" in line
    unreachable = dlq_cli(UNREACHABLE, "list", "--adapter", "sales")
    assert unreachable.code == 3, unreachable
    line = assert_one_clear_line(unreachable)
    assert "cannot reach RabbitMQ at amqp://guest:***@127.0.0.1:1/" in line
    assert "secret" not in unreachable.stderr
