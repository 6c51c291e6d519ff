"""``crmsync migrate --dry-run``: the plan of a migration, pure (values in, values out).

Two questions, each answered from what is already stored, so a dry run writes nothing:

* :func:`judge` (in the router): what the hub would make of a page of source rows:
  a record it holds, or for a row it never saw, the verdict of identity matching
  (:func:`router.identity.match`, the rule the real run applies).
* :func:`plan_page` (in the command): each row's outcome from that verdict and the
  target's content hashes, with the same names the real run counts under.

A row whose hub record identity matching joined with a row of the source or target
(an alias no migration has counted yet) is ``link``, as the real run counts it
(:func:`router.daemon.migration._linked`); a record held identically is ``unchanged``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from router.adapter_control import PlanRow
from router.control_migration import MatchItem, Verdict
from router.identity import AMBIGUOUS, Alias, Member, ParkedIdentity, match

Outcome = Literal["create", "link", "update", "unchanged", "invalid", "ambiguous", "duplicates"]
OUTCOMES: tuple[Outcome, ...] = (
    "create",
    "link",
    "update",
    "unchanged",
    "invalid",
    "ambiguous",
    "duplicates",
)


def judge(
    items: Sequence[MatchItem],
    *,
    keys: Sequence[str],
    source: str,
    target: str,
    aliases: Mapping[str, Alias],
    known: Iterable[str],
    aliases_of: Mapping[str, Sequence[Alias]],
    parked: Mapping[str, ParkedIdentity],
    candidates: Mapping[tuple[str, str], set[str]],
    members: Mapping[str, Iterable[Member]],
) -> list[Verdict]:
    """The hub's verdict per item. ``aliases``: alias id -> alias (of the items' ids);
    ``known``: record ids the hub holds; ``aliases_of``: record id -> the aliases that
    point at it; ``parked``: record id -> its event identity matching parked;
    ``candidates``: (key, indexed value) -> live records holding it."""
    held = set(known)
    out: list[Verdict] = []
    for item in items:
        rid = item.record_id
        if rid is not None:
            alias = aliases.get(rid)
            record_id = alias.record_id if alias is not None else rid
            if record_id in held:
                out.append(_known(record_id, aliases_of.get(record_id, ()), source, target))
                continue
            waiting = parked.get(rid)
            if waiting is not None:
                kind: Literal["ambiguous", "duplicate"] = (
                    "ambiguous" if waiting.reason == AMBIGUOUS else "duplicate"
                )
                first = waiting.candidates[0] if waiting.candidates else None
                out.append(
                    Verdict(
                        kind=kind,
                        record_id=first if kind == "duplicate" else None,
                        candidates=len(waiting.candidates),
                    )
                )
                continue
        # Never seen: the record id is new to the hub, and identity matching decides.
        found = match(dict(item.keys), keys, candidates, members, source, item.source_record_id)
        if found.kind == "new":
            out.append(Verdict(kind="new"))
        elif found.kind == "alias":
            assert found.record_id is not None
            theirs = _target_ids(found.record_id, aliases_of.get(found.record_id, ()), target)
            out.append(
                Verdict(kind="alias", record_id=found.record_id, target_ids=theirs, key=found.key)
            )
        else:
            out.append(
                Verdict(
                    kind=found.kind,
                    record_id=found.record_id if found.kind == "duplicate" else None,
                    candidates=len(found.candidates),
                    key=found.key,
                )
            )
    return out


def _target_ids(record_id: str, aliases: Iterable[Alias], target: str) -> list[str]:
    """The record's id and its aliases the target made (a link not yet re-keyed)."""
    return [record_id, *(a.alias_id for a in aliases if a.source == target)]


def _known(record_id: str, aliases: Sequence[Alias], source: str, target: str) -> Verdict:
    joined = any(a.source in (source, target) and a.migration is None for a in aliases)
    return Verdict(
        kind="known",
        record_id=record_id,
        joined=joined,
        target_ids=_target_ids(record_id, aliases, target),
    )


@dataclass(frozen=True)
class Planned:
    source_record_id: str
    outcome: Outcome
    record_id: str | None = None  # the hub record it would be (unplaced rows: their own)
    reason: str = ""  # ids and key names only, never a value


@dataclass
class Seen:
    """What earlier rows of this plan would store (rows the hub never saw): their keys
    and the records they would link to, so a later row with one of them is a duplicate
    inside the source, as the real run finds it. Only uncaptured rows are kept."""

    keys: dict[tuple[str, str], str] = field(default_factory=dict)  # -> source id
    linked: dict[str, str] = field(default_factory=dict)  # hub record -> source id


def plan_page(
    rows: Sequence[PlanRow],
    verdicts: Mapping[str, Verdict],
    hashes: Mapping[str, str | None],
    seen: Seen,
) -> list[Planned]:
    """Each row's outcome. ``verdicts``: source id -> the router's verdict (every valid
    row has one); ``hashes``: record id -> the target's hash of it (absent: the target
    does not hold it)."""
    out: list[Planned] = []
    for row in rows:
        sid = row.source_record_id
        if row.error is not None:
            out.append(Planned(sid, "invalid", row.record_id, row.error))
            continue
        v = verdicts[sid]
        held = next((hashes[t] for t in v.target_ids if t in hashes), _ABSENT)
        if v.kind == "ambiguous":
            out.append(
                Planned(
                    sid,
                    "ambiguous",
                    row.record_id,
                    f"{v.key or 'match key'} matches {v.candidates} records",
                )
            )
        elif v.kind == "duplicate":
            out.append(
                Planned(
                    sid,
                    "duplicates",
                    row.record_id,
                    f"same {v.key or 'match key'} as record {v.record_id}",
                )
            )
        elif v.kind == "known":
            if held is _ABSENT:
                out.append(Planned(sid, "create", v.record_id))
            elif v.joined:
                out.append(Planned(sid, "link", v.record_id))
            else:
                same = held is not None and held == row.hash
                out.append(Planned(sid, "unchanged" if same else "update", v.record_id))
        else:
            out.append(_unseen(row, v, held is not _ABSENT, seen))
    return out


_ABSENT = "\0absent"  # not a hash: the target holds none of the ids


def _unseen(row: PlanRow, v: Verdict, target_holds: bool, seen: Seen) -> Planned:
    """A row the hub never saw: new, or linked by its key; a duplicate of an earlier row."""
    sid = row.source_record_id
    for key, value in row.keys:
        first = seen.keys.get((key, value))
        if first is not None:
            return Planned(sid, "duplicates", row.record_id, f"same {key} as source row {first}")
    if v.kind == "alias":
        assert v.record_id is not None
        first = seen.linked.get(v.record_id)
        if first is not None:
            return Planned(sid, "duplicates", row.record_id, f"same {v.key} as source row {first}")
        seen.linked[v.record_id] = sid
    for pair in row.keys:
        seen.keys[pair] = sid
    if v.kind == "alias" and target_holds:
        return Planned(sid, "link", v.record_id)
    return Planned(sid, "create", v.record_id)
