"""Adapter registration (router/registry.py): who may publish, under which actor epoch."""

from __future__ import annotations

import pytest

from router.errors import RegistrationRefused
from router.registry import Registration, register, rewound, subscribers

ENTITIES = {"contact": ["email", "first_name"]}


def existing(name: str = "legacy", epoch: int = 1, registered_at: float = 100.0) -> Registration:
    return Registration(name, epoch, ENTITIES, "0.1.0", registered_at, registered_at + 5)


def test_new_name_without_actor_gets_epoch_1() -> None:
    reg = register(None, "legacy", None, ENTITIES, "0.1.0", now=200.0)
    assert reg.name == "legacy"
    assert reg.epoch == 1
    assert reg.actor == "legacy"
    assert reg.entities == ENTITIES
    assert reg.sw_version == "0.1.0"
    assert reg.registered_at == 200.0
    assert reg.last_heartbeat == 200.0


@pytest.mark.parametrize(("known_epoch", "actor"), [(1, "legacy@2"), (2, "legacy@3")])
def test_known_name_without_actor_gets_the_next_epoch(known_epoch: int, actor: str) -> None:
    reg = register(existing(epoch=known_epoch), "legacy", None, ENTITIES, "0.2.0", now=300.0)
    assert reg.epoch == known_epoch + 1
    assert reg.actor == actor
    # A re-registration keeps when the adapter first registered.
    assert reg.registered_at == 100.0
    assert reg.last_heartbeat == 300.0
    assert reg.sw_version == "0.2.0"


@pytest.mark.parametrize(("epoch", "actor"), [(1, "legacy"), (2, "legacy@2")])
def test_claimed_actor_with_the_registry_epoch_keeps_it(epoch: int, actor: str) -> None:
    reg = register(existing(epoch=epoch), "legacy", actor, ENTITIES, "0.1.0", now=300.0)
    assert reg.epoch == epoch
    assert reg.actor == actor
    assert reg.registered_at == 100.0


def test_claimed_actor_unknown_to_registry_is_taken() -> None:
    # E.g. the router's state was rebuilt: the adapter's own state says legacy@2.
    reg = register(None, "legacy", "legacy@2", ENTITIES, "0.1.0", now=300.0)
    assert reg.epoch == 2
    assert reg.actor == "legacy@2"


@pytest.mark.parametrize(
    ("registry_epoch", "claimed", "issued"), [(2, "legacy", 3), (3, "legacy@2", 4)]
)
def test_claimed_epoch_older_than_registry_gets_the_next_epoch(
    registry_epoch: int, claimed: str, issued: int
) -> None:
    # Its state file was restored from a backup: refusing it left the CRM out of sync
    # until an operator acted; a new epoch makes sure no counter is used twice.
    old = existing(epoch=registry_epoch)
    reason = rewound(old, claimed, None, {})
    assert reason is not None and str(registry_epoch) in reason and "epoch" in reason
    reg = register(old, "legacy", claimed, ENTITIES, "0.1.0", now=300.0)
    assert reg.epoch == issued
    assert reg.registered_at == 100.0


@pytest.mark.parametrize(("highest", "issued"), [(3, 2), (0, 2), (7, 1), (9, 1), (None, 1)])
def test_links_behind_the_routers_counter_get_the_next_epoch(
    highest: int | None, issued: int
) -> None:
    # The CRM database was restored: its links say legacy:3, the router accepted legacy:7.
    highs = {"legacy": 7, "sales": 12}
    reg = register(existing(), "legacy", "legacy", ENTITIES, "0.1.0", 300.0, highest, highs)
    assert reg.epoch == issued
    reason = rewound(existing(), "legacy", highest, highs)
    assert (reason is not None) == (issued == 2)
    if reason:
        assert "3" in reason or "0" in reason
        assert "7" in reason


def test_a_new_epoch_for_a_rewound_actor_is_above_every_epoch_known() -> None:
    # Links of legacy@2 behind the router's: the next epoch is 3, never 2 again.
    reg = register(
        existing(epoch=2), "legacy", "legacy@2", ENTITIES, "0.1.0", 1.0, 1, {"legacy@2": 5}
    )
    assert reg.actor == "legacy@3"


@pytest.mark.parametrize("name", ["hub", "router"])
def test_reserved_names_are_refused(name: str) -> None:
    with pytest.raises(RegistrationRefused) as info:
        register(None, name, None, ENTITIES, "0.1.0", now=1.0)
    assert "reserved" in str(info.value)


@pytest.mark.parametrize("claimed", ["sales", "sales@2", "legacy2", "hub"])
def test_actor_of_another_name_is_refused(claimed: str) -> None:
    with pytest.raises(RegistrationRefused) as info:
        register(existing(), "legacy", claimed, ENTITIES, "0.1.0", now=1.0)
    assert claimed in str(info.value)


def test_registration_refused_is_a_crmsync_error() -> None:
    from router.errors import CrmsyncError

    assert issubclass(RegistrationRefused, CrmsyncError)


def test_subscribers_are_sorted_names_mapping_the_entity() -> None:
    regs = {
        "sales": Registration("sales", 1, {"contact": ["email"], "deal": ["amount"]}, "1", 0, 0),
        "legacy": Registration("legacy", 2, {"contact": ["email"]}, "1", 0, 0),
        "mktg": Registration("mktg", 1, {"company": ["name"]}, "1", 0, 0),
        "billing": Registration(
            "billing", 1, {"contact": ["phone"], "deal": ["amount"]}, "1", 0, 0
        ),
    }
    assert subscribers(regs, "contact") == ["billing", "legacy", "sales"]
    assert subscribers(regs, "deal") == ["billing", "sales"]
    assert subscribers(regs, "company") == ["mktg"]
    assert subscribers(regs, "ticket") == []
    assert subscribers({}, "contact") == []
