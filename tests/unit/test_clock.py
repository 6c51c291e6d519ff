"""Vector clocks (router/clock.py): the partial order behind every router decision."""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from router.clock import (
    EMPTY,
    Order,
    VectorClock,
    actor_epoch,
    actor_name,
    compare,
    make_actor,
    meet,
    merge,
)

ACTORS = ["a", "b", "c", "hub", "x@2"]

actors = st.sampled_from(ACTORS)
raw_clocks = st.dictionaries(actors, st.integers(min_value=0, max_value=5))
clocks = raw_clocks.map(VectorClock)


def entrywise_le(a: VectorClock, b: VectorClock) -> bool:
    """Oracle: a <= b entry by entry, a missing actor counting as 0."""
    return all(a.get(actor) <= b.get(actor) for actor in ACTORS)


# -- the four outcomes of compare ------------------------------------------------------


@given(clocks)
def test_compare_is_reflexive(a: VectorClock) -> None:
    assert compare(a, a) is Order.EQUAL
    assert compare(a, VectorClock(a.to_dict())) is Order.EQUAL


@given(clocks, clocks)
def test_compare_is_antisymmetric(a: VectorClock, b: VectorClock) -> None:
    ab, ba = compare(a, b), compare(b, a)
    assert (ab is Order.BEFORE) == (ba is Order.AFTER)
    assert (ab is Order.AFTER) == (ba is Order.BEFORE)
    assert (ab is Order.EQUAL) == (a == b)
    assert (ab is Order.EQUAL) == (ba is Order.EQUAL)
    assert (ab is Order.CONCURRENT) == (ba is Order.CONCURRENT)


@given(clocks, clocks)
def test_compare_matches_entrywise_definition(a: VectorClock, b: VectorClock) -> None:
    le, ge = entrywise_le(a, b), entrywise_le(b, a)
    expected = {
        (True, True): Order.EQUAL,
        (True, False): Order.BEFORE,
        (False, True): Order.AFTER,
        (False, False): Order.CONCURRENT,
    }[(le, ge)]
    assert compare(a, b) is expected
    assert a.dominates(b) == ge


@given(clocks, clocks, clocks)
def test_dominates_is_transitive(a: VectorClock, x: VectorClock, y: VectorClock) -> None:
    # Build a chain a <= b <= c, then check the relation carries through.
    b = merge(a, x)
    c = merge(b, y)
    assert b.dominates(a)
    assert c.dominates(b)
    assert c.dominates(a)


@given(clocks, clocks, clocks)
def test_dominates_is_transitive_on_arbitrary_triples(
    a: VectorClock, b: VectorClock, c: VectorClock
) -> None:
    if b.dominates(a) and c.dominates(b):
        assert c.dominates(a)


def test_concrete_orders() -> None:
    a1 = VectorClock({"a": 1})
    a1b1 = VectorClock({"a": 1, "b": 1})
    b1 = VectorClock({"b": 1})
    assert compare(a1, a1b1) is Order.BEFORE
    assert compare(a1b1, a1) is Order.AFTER
    assert compare(a1, b1) is Order.CONCURRENT
    assert compare(EMPTY, a1) is Order.BEFORE
    assert compare(EMPTY, VectorClock()) is Order.EQUAL


# -- merge --------------------------------------------------------------------------------


@given(clocks, clocks)
def test_merge_is_commutative(a: VectorClock, b: VectorClock) -> None:
    assert merge(a, b) == merge(b, a)


@given(clocks, clocks, clocks)
def test_merge_is_associative(a: VectorClock, b: VectorClock, c: VectorClock) -> None:
    assert merge(merge(a, b), c) == merge(a, merge(b, c)) == merge(a, b, c)


@given(clocks)
def test_merge_is_idempotent(a: VectorClock) -> None:
    assert merge(a, a) == a
    assert merge(a) == a
    assert merge(a, EMPTY) == a


def test_merge_of_nothing_is_empty() -> None:
    assert merge() == EMPTY


@given(clocks, clocks)
def test_merge_is_an_upper_bound(a: VectorClock, b: VectorClock) -> None:
    m = merge(a, b)
    assert m.dominates(a)
    assert m.dominates(b)


@given(clocks, clocks, clocks)
def test_merge_is_the_least_upper_bound(a: VectorClock, b: VectorClock, d: VectorClock) -> None:
    m = merge(a, b)
    # Any clock above both inputs is above their merge ...
    c = merge(a, b, d)
    assert c.dominates(m)
    # ... including arbitrary ones that happen to dominate both.
    if d.dominates(a) and d.dominates(b):
        assert d.dominates(m)


# -- meet ---------------------------------------------------------------------------------


@given(clocks, clocks)
def test_meet_is_a_lower_bound_and_commutative(a: VectorClock, b: VectorClock) -> None:
    m = meet(a, b)
    assert a.dominates(m)
    assert b.dominates(m)
    assert m == meet(b, a)


@given(clocks, clocks, clocks)
def test_meet_is_the_greatest_lower_bound(a: VectorClock, b: VectorClock, d: VectorClock) -> None:
    if a.dominates(d) and b.dominates(d):
        assert meet(a, b).dominates(d)
    assert meet(meet(a, b), d) == meet(a, meet(b, d)) == meet(a, b, d)


@given(clocks, clocks)
def test_meet_and_merge_absorb(a: VectorClock, b: VectorClock) -> None:
    assert meet(a, merge(a, b)) == a
    assert merge(a, meet(a, b)) == a
    assert meet(a) == a


def test_merge_is_entrywise_max() -> None:
    assert merge(VectorClock({"a": 3, "b": 1}), VectorClock({"b": 2, "c": 1})) == VectorClock(
        {"a": 3, "b": 2, "c": 1}
    )


# -- increment and base ---------------------------------------------------------------------


@given(clocks, actors)
def test_increment_is_after_the_original(a: VectorClock, actor: str) -> None:
    nxt = a.increment(actor)
    assert compare(nxt, a) is Order.AFTER
    assert compare(a, nxt) is Order.BEFORE
    assert nxt.get(actor) == a.get(actor) + 1
    assert all(nxt.get(other) == a.get(other) for other in ACTORS if other != actor)


@given(clocks, actors)
def test_base_of_increment_is_the_original(a: VectorClock, actor: str) -> None:
    assert a.increment(actor).base(actor) == a


def test_base_of_missing_actor_is_unchanged() -> None:
    clock = VectorClock({"a": 2})
    assert clock.base("b") == clock
    assert VectorClock({"a": 1}).base("a") == EMPTY


@given(clocks, actors)
def test_increment_does_not_mutate(a: VectorClock, actor: str) -> None:
    before = a.to_dict()
    a.increment(actor)
    a.base(actor)
    assert a.to_dict() == before


# -- sparse representation: zeros dropped, equality and hashing agree -----------------------


def test_zero_entries_are_dropped() -> None:
    assert VectorClock({"a": 0}) == VectorClock()
    assert hash(VectorClock({"a": 0})) == hash(VectorClock())
    assert VectorClock({"a": 0}) == EMPTY
    assert len(VectorClock({"a": 0, "b": 2})) == 1
    assert VectorClock({"a": 0, "b": 2}).to_dict() == {"b": 2}
    assert "a" not in VectorClock({"a": 0})


@given(raw_clocks, st.lists(actors))
def test_equality_and_hash_ignore_zero_entries(raw: dict[str, int], zeros: list[str]) -> None:
    padded = {**{actor: 0 for actor in zeros}, **raw}
    a, b = VectorClock(raw), VectorClock(padded)
    assert a == b
    assert hash(a) == hash(b)
    assert len({a, b}) == 1


@given(raw_clocks)
def test_missing_actor_reads_as_zero(raw: dict[str, int]) -> None:
    clock = VectorClock(raw)
    for actor in ACTORS:
        assert clock.get(actor) == raw.get(actor, 0)


@given(clocks, clocks)
def test_equal_clocks_hash_equal(a: VectorClock, b: VectorClock) -> None:
    if a == b:
        assert hash(a) == hash(b)


def test_clock_is_immutable_copy_of_input() -> None:
    source = {"a": 1}
    clock = VectorClock(source)
    source["a"] = 5
    assert clock.get("a") == 1
    exported = clock.to_dict()
    exported["a"] = 9
    assert clock.get("a") == 1


# -- no Python ordering operators -----------------------------------------------------------


@pytest.mark.parametrize("op", [operator.lt, operator.le, operator.gt, operator.ge])
def test_clocks_have_no_ordering_operators(op: Callable[[Any, Any], Any]) -> None:
    a, b = VectorClock({"a": 1}), VectorClock({"a": 1, "b": 1})
    with pytest.raises(TypeError):
        op(a, b)


def test_clocks_cannot_be_sorted() -> None:
    with pytest.raises(TypeError):
        sorted([VectorClock({"a": 2}), VectorClock({"a": 1})])  # type: ignore[type-var]


# -- invalid constructions -------------------------------------------------------------------


@pytest.mark.parametrize(
    "entries",
    [
        {"a": -1},
        {"a": 1.0},
        {"a": "3"},
        {"a": None},
        {"a": True},
        {"a": False},
        {"": 1},
        {1: 1},
    ],
    ids=["negative", "float", "str", "none", "true", "false", "empty-actor", "int-actor"],
)
def test_invalid_clocks_are_refused(entries: dict[Any, Any]) -> None:
    with pytest.raises(ValueError):
        VectorClock(entries)


# -- actors and epochs ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("actor", "name", "epoch"),
    [("legacy", "legacy", 1), ("legacy@2", "legacy", 2), ("hub@13", "hub", 13), ("hub", "hub", 1)],
)
def test_actor_name_and_epoch(actor: str, name: str, epoch: int) -> None:
    assert actor_name(actor) == name
    assert actor_epoch(actor) == epoch
    assert make_actor(name, epoch) == actor


def test_make_actor_first_epoch_is_bare_name() -> None:
    assert make_actor("legacy", 1) == "legacy"
    assert make_actor("legacy", 2) == "legacy@2"


@given(
    st.from_regex(r"[a-z][a-z0-9_-]{0,20}", fullmatch=True),
    st.integers(min_value=1, max_value=10**6),
)
def test_make_actor_round_trips(name: str, epoch: int) -> None:
    actor = make_actor(name, epoch)
    assert actor_name(actor) == name
    assert actor_epoch(actor) == epoch
    assert make_actor(actor_name(actor), actor_epoch(actor)) == actor
