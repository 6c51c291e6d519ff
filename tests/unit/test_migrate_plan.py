"""The dry run's pure planning (router.migrate_plan): the router's verdict per source row
from the stored identity tables, and each row's outcome from that verdict and the
target's hashes, named as the real run counts them."""

from __future__ import annotations

from router.adapter_control import PlanRow
from router.control_migration import MatchItem, Verdict
from router.identity import AMBIGUOUS, DUPLICATE, Alias, Member, ParkedIdentity
from router.migrate_plan import Seen, judge, plan_page

KEYS = ["email"]


def alias(alias_id: str, record_id: str, source: str, migration: str | None = None) -> Alias:
    return Alias(alias_id, record_id, "contact", source, f"s-{alias_id}", 0.0, migration)


def parked(record_id: str, reason: str, candidates: tuple[str, ...]) -> ParkedIdentity:
    return ParkedIdentity("e1", record_id, "contact", "old", "s9", reason, candidates, b"", 0.0)


def ask(*items: MatchItem, **stored: object) -> list[Verdict]:
    given: dict[str, object] = {
        "aliases": {},
        "known": set(),
        "aliases_of": {},
        "parked": {},
        "candidates": {},
        "members": {},
        **stored,
    }
    return judge(items, keys=KEYS, source="old", target="new", **given)  # type: ignore[arg-type]


def item(sid: str, record_id: str | None = None, email: str | None = None) -> MatchItem:
    return MatchItem(
        source_record_id=sid, record_id=record_id, keys=[("email", email)] if email else []
    )


# -- judge: the router's verdict --------------------------------------------------------


def test_a_record_the_hub_holds_is_known_with_the_ids_the_target_may_hold_it_under() -> None:
    [plain, joined, counted] = ask(
        item("s1", "r1"),
        item("s2", "r2"),
        item("s3", "a3"),  # the source's id is an alias of r3
        known={"r1", "r2", "r3"},
        aliases={"a3": alias("a3", "r3", "old", migration="m0")},
        aliases_of={"r2": [alias("t2", "r2", "new")], "r3": [alias("a3", "r3", "old", "m0")]},
    )
    assert plain == Verdict(kind="known", record_id="r1", target_ids=["r1"])
    # joined with the target's row by identity matching, no migration counted it yet
    assert joined == Verdict(kind="known", record_id="r2", joined=True, target_ids=["r2", "t2"])
    # an alias an earlier migration counted as linked is not linked again
    assert counted == Verdict(kind="known", record_id="r3", target_ids=["r3"])


def test_a_row_the_hub_never_saw_gets_identity_matchings_verdict() -> None:
    found = ask(
        item("s1", None, "ann@x.io"),
        item("s2", None, "bo@x.io"),
        item("s3", "fresh", "cy@x.io"),
        item("s4", None, "dee@x.io"),
        item("s5", None, None),
        candidates={
            ("email", "bo@x.io"): {"h2"},
            ("email", "cy@x.io"): {"h3", "h4"},
            ("email", "dee@x.io"): {"h5"},
        },
        members={"h2": [Member("h2", "new", "t2")], "h5": [Member("h5", "old", "s0")]},
        aliases_of={"h2": [alias("t2x", "h2", "new")]},
    )
    assert [v.kind for v in found] == ["new", "alias", "ambiguous", "duplicate", "new"]
    assert found[1].record_id == "h2" and found[1].target_ids == ["h2", "t2x"]
    assert found[2].candidates == 2 and found[2].record_id is None
    # h5 already holds another row of this source: a duplicate inside the source
    assert found[3].record_id == "h5"


def test_a_row_identity_matching_parked_keeps_its_reason() -> None:
    found = ask(
        item("s1", "p1", "x@x.io"),
        item("s2", "p2", "y@x.io"),
        parked={"p1": parked("p1", DUPLICATE, ("h1",)), "p2": parked("p2", AMBIGUOUS, ("a", "b"))},
    )
    assert found == [
        Verdict(kind="duplicate", record_id="h1", candidates=1),
        Verdict(kind="ambiguous", candidates=2),
    ]


# -- plan_page: each row's outcome ------------------------------------------------------


def row(sid: str, record_id: str | None = None, h: str = "h", email: str | None = None) -> PlanRow:
    return PlanRow(
        source_record_id=sid,
        record_id=record_id,
        hash=h,
        keys=[("email", email)] if email else [],
    )


def test_each_outcome_as_the_real_run_counts_it() -> None:
    rows = [
        PlanRow(source_record_id="bad", error="email: value_error"),
        row("s1", "r1", "h1"),
        row("s2", "r2", "h2"),
        row("s3", "r3", "h3"),
        row("s4", "r4", "h4"),
        row("s5", "r5", "h5"),
        row("s6", None, email="new@x.io"),
        row("s7", None, email="held@x.io"),
        row("s8", "p8"),
        row("s9", "p9"),
    ]
    verdicts = {
        "s1": Verdict(kind="known", record_id="r1", target_ids=["r1"]),
        "s2": Verdict(kind="known", record_id="r2", target_ids=["r2"]),
        "s3": Verdict(kind="known", record_id="r3", target_ids=["r3"]),
        "s4": Verdict(kind="known", record_id="r4", joined=True, target_ids=["r4", "t4"]),
        "s5": Verdict(kind="known", record_id="r5", joined=True, target_ids=["r5"]),
        "s6": Verdict(kind="new"),
        "s7": Verdict(kind="alias", record_id="h7", target_ids=["h7"], key="email"),
        "s8": Verdict(kind="ambiguous", candidates=3, key="email"),
        "s9": Verdict(kind="duplicate", record_id="r1", key="email"),
    }
    hashes = {"r1": "h1", "r2": "other", "t4": "zz", "h7": "h"}
    planned = plan_page(rows, verdicts, hashes, Seen())
    assert [(p.source_record_id, p.outcome) for p in planned] == [
        ("bad", "invalid"),
        ("s1", "unchanged"),
        ("s2", "update"),
        ("s3", "create"),  # the target does not hold r3
        ("s4", "link"),  # held under the target's alias t4, joined by identity matching
        ("s5", "create"),  # joined, but the target does not hold it: the run creates it
        ("s6", "create"),
        ("s7", "link"),
        ("s8", "ambiguous"),
        ("s9", "duplicates"),
    ]
    assert planned[0].reason == "email: value_error"
    assert planned[7].record_id == "h7"
    assert planned[8].reason == "email matches 3 records"
    assert planned[9].reason == "same email as record r1"
    assert planned[9].record_id == "p9"  # its own id: it is placed nowhere


def test_a_row_with_the_key_of_an_earlier_unseen_row_is_a_duplicate_across_pages() -> None:
    seen = Seen()
    first = plan_page([row("a", None, email="k@x.io")], {"a": Verdict(kind="new")}, {}, seen)
    again = plan_page(
        [row("b", None, email="k@x.io"), row("c", None, email="other@x.io")],
        {"b": Verdict(kind="new"), "c": Verdict(kind="new")},
        {},
        seen,
    )
    assert [p.outcome for p in first] == ["create"]
    assert [(p.outcome, p.reason) for p in again] == [
        ("duplicates", "same email as source row a"),
        ("create", ""),
    ]


def test_two_unseen_rows_linking_to_one_record_leave_the_second_a_duplicate() -> None:
    verdict = Verdict(kind="alias", record_id="h1", target_ids=["h1"], key="email")
    rows = [row("a", None, email="k@x.io"), row("b", None, email="K2@x.io")]
    planned = plan_page(rows, {"a": verdict, "b": verdict}, {}, Seen())
    assert [(p.outcome, p.record_id) for p in planned] == [("create", "h1"), ("duplicates", None)]
    assert planned[1].reason == "same email as source row a"


def test_a_reason_never_holds_a_key_value() -> None:
    rows = [row("a", None, email="secret@x.io"), row("b", None, email="secret@x.io")]
    planned = plan_page(rows, {"a": Verdict(kind="new"), "b": Verdict(kind="new")}, {}, Seen())
    assert all("secret" not in p.reason for p in planned)
