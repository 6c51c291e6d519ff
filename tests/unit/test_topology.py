"""Queue specifications (router/topology.py) that the broker's behaviour hangs on."""

from __future__ import annotations

from router import topology


def _spec(name: str) -> topology.QueueSpec:
    return next(q for q in topology.hub_queues() if q.name == name)


def test_ingress_is_single_active_with_an_at_least_once_backstop_into_invalid() -> None:
    args = _spec(topology.INGRESS).arguments
    assert args["x-single-active-consumer"] is True
    assert args["x-queue-type"] == "quorum"
    # Well above the sinks' limit: a healthy event held through crashes must survive.
    assert args["x-delivery-limit"] == topology.INGRESS_DELIVERY_LIMIT > 100
    # At-least-once dead-lettering needs all three (else RabbitMQ drops silently).
    assert args["x-dead-letter-strategy"] == "at-least-once"
    assert args["x-overflow"] == "reject-publish"
    exchange, key = args["x-dead-letter-exchange"], args["x-dead-letter-routing-key"]
    assert exchange in {e.name for e in topology.HUB_EXCHANGES}
    # ... into the invalid queue, never back into the ingress itself.
    assert (exchange, key) in _spec(topology.INVALID).bindings
    assert (exchange, key) not in _spec(topology.INGRESS).bindings


def test_the_invalid_queue_is_declared_before_the_ingress_dead_letters_into_it() -> None:
    names = [q.name for q in topology.hub_queues()]
    assert names.index(topology.INVALID) < names.index(topology.INGRESS)


def test_an_old_ingress_gets_a_safe_upgrade_path_in_one_line() -> None:
    fix = topology.mismatch_fix(topology.INGRESS)
    assert "\n" not in fix
    assert fix.index("stop the adapters") < fix.index("delete_queue")
    assert "topology declare" in topology.mismatch_fix("crmsync.sink.x")


def test_retry_tiers_are_reached_through_their_own_exchange_under_the_adapters_key() -> None:
    specs = {q.name: q for q in topology.adapter_queues("sales", [("1s", 1.0), ("1m", 60.0)])}
    tier = specs[topology.retry_queue("sales", "1m")]
    # Not the default exchange: write on amq.default reaches every queue (issue 13).
    assert tier.bindings == ((topology.RETRY, "sales.1m"),)
    assert topology.RETRY in {e.name for e in topology.HUB_EXCHANGES}
    # ... and back to the adapter's own sink when the tier's TTL runs out.
    args = tier.arguments
    assert (args["x-dead-letter-exchange"], args["x-dead-letter-routing-key"]) == (
        topology.DELIVERIES,
        "sales",
    )
    assert (topology.DELIVERIES, "sales") in specs[topology.sink_queue("sales")].bindings
