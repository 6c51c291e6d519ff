"""``crmsync policy check``: who owns each field and what a concurrent change does.

A dry run over the router config and the adapter configs; nothing is sent or stored.
The plan describes the rules :mod:`router.policies` applies and asks them (``Rules.for_field``,
``Rules.rank``) instead of restating them, so the two cannot drift apart:

* a field only one side of a concurrent change changed is always kept, under every policy;
  a field only one adapter maps can therefore never be contested;
* a field several CRMs changed concurrently goes to ``Rules.for_field``: ``lww``,
  ``priority`` or ``manual``.

``build_plan`` is pure (configs in, values out); ``run_check`` loads files and prints.
"""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from rich import box
from rich.console import Console
from rich.table import Table

from router.adapter_config import AdapterConfig, load_adapter
from router.config import RouterConfig, load_router
from router.errors import ConfigError
from router.policies import OPERATOR, DeleteRule, FieldPolicy, PolicyName, Rules

OnConflict = Literal["lww", "priority", "manual", "none"]

LATEST_EDIT = "latest edit"
OPERATOR_DECIDES = "operator"

#: One line per policy, printed under a table that uses it.
POLICY_NOTES: dict[str, str] = {
    "lww": "lww: the latest edit (occurred_at) wins; ties go by actor name.",
    "priority": f"priority: the value set by the highest-ranked source wins; unlisted sources "
    f"rank last, equal rank: latest edit; an operator's value ({OPERATOR}) outranks every CRM.",
    "manual": "manual: the record is parked for an operator (crmsync conflicts list/show/"
    "resolve); nothing is sent for it and its later changes wait until resolved.",
}

DELETE_NOTES: dict[str, str] = {
    "update-wins": "a concurrent update beats a delete (the CRM that deleted gets the record back)",
    "delete-wins": "a concurrent delete beats updates (a deleted outcome never parks)",
}


@dataclass(frozen=True)
class FieldPlan:
    """What happens to one canonical field when CRMs change it concurrently."""

    writers: tuple[str, ...]  # adapters that map the field, sorted
    on_conflict: OnConflict  # "none": only one adapter writes it, so it is never contested
    owner: str  # an adapter name, "latest edit", "operator" or "never contested (...)"
    summary: str


@dataclass(frozen=True)
class EntityPlan:
    policy: PolicyName
    fallback: FieldPolicy | None  # only under field-merge
    priority: tuple[str, ...]
    deletes: DeleteRule
    may_park: bool
    fields: dict[str, FieldPlan]


Plan = dict[str, EntityPlan]


# -- pure planning -----------------------------------------------------------------------------


def writers_by_entity(adapters: Sequence[AdapterConfig]) -> dict[str, dict[str, list[str]]]:
    """entity -> canonical field -> the sorted names of the adapters that map it."""
    mapped: dict[str, dict[str, list[str]]] = {}
    for adapter in sorted(adapters, key=lambda a: a.name):
        for entity, mapping in adapter.entities.items():
            for name in mapping.field_names():
                mapped.setdefault(entity, {}).setdefault(name, []).append(adapter.name)
    return mapped


def check(cfg: RouterConfig, adapters: Sequence[AdapterConfig], origin: str) -> None:
    """Raise ConfigError for the first policy naming what no adapter has.

    Such a policy is not wrong TOML, but it cannot do what its author meant (a misspelt
    source in ``priority`` ranks nothing; an override of an unmapped field decides nothing).
    Order: entities sorted; per entity the table itself, its priority list, its overrides.
    """
    mapped = writers_by_entity(adapters)
    names = {a.name for a in adapters}
    for entity, conflict in sorted(cfg.conflicts.items()):
        key = f"conflicts.{entity}"
        if entity not in mapped:
            raise ConfigError(
                f"{origin}: {key} is for an entity no adapter config maps "
                f"(mapped: {', '.join(sorted(mapped)) or 'none'})"
            )
        for source in conflict.priority:
            if source not in names:
                raise ConfigError(
                    f"{origin}: {key}.priority names {source!r}, which no adapter config has "
                    f"(known: {', '.join(sorted(names))})"
                )
        for name in sorted(conflict.fields):
            if name not in mapped[entity]:
                raise ConfigError(
                    f"{origin}: {key}.fields.{name} names a field no adapter maps for {entity} "
                    f"(mapped: {', '.join(sorted(mapped[entity]))})"
                )


def plan_field(name: str, writers: Sequence[str], rules: Rules) -> FieldPlan:
    """The plan of one field, from the policy ``Rules.for_field`` gives it."""
    if len(writers) == 1:
        return FieldPlan(
            tuple(writers),
            "none",
            f"never contested (only {writers[0]} writes it)",
            f"Only {writers[0]} writes {name}: its changes always apply.",
        )
    who = " and ".join(writers) if len(writers) == 2 else f"two or more of {', '.join(writers)}"
    when = f"Changed concurrently by {'both ' if len(writers) == 2 else ''}{who}"
    policy = rules.for_field(name)
    if policy == "manual":
        owner = OPERATOR_DECIDES
        summary = (
            f"{when}: the record is parked for an operator; nothing is sent for it until resolved"
        )
        if rules.deletes == "delete-wins":
            summary += " (unless a concurrent delete wins: then nothing parks)"
    elif policy == "priority":
        owner = _priority_owner(writers, rules)
        ranked = " > ".join(_ranking(writers, rules))
        summary = (
            f"{when}: the highest-ranked source's value wins ({ranked}); "
            "an operator's value outranks them all"
        )
    else:
        owner = LATEST_EDIT
        summary = f"{when}: the latest edit wins (ties by actor name)"
    return FieldPlan(tuple(writers), policy, owner, summary + ".")


def _ranking(writers: Sequence[str], rules: Rules) -> list[str]:
    """Writers strongest first; writers of equal rank are grouped as ``a = b``."""
    groups: dict[int, list[str]] = {}
    for writer in writers:
        groups.setdefault(rules.rank(writer), []).append(writer)
    return [" = ".join(sorted(groups[rank])) for rank in sorted(groups)]


def _priority_owner(writers: Sequence[str], rules: Rules) -> str:
    best = min(rules.rank(w) for w in writers)
    top = sorted(w for w in writers if rules.rank(w) == best)
    # Writers the list does not name share the last rank: the latest edit decides.
    return top[0] if len(top) == 1 else f"{LATEST_EDIT} of {', '.join(top)}"


def plan_entity(rules: Rules, writers: dict[str, list[str]]) -> EntityPlan:
    fields = {name: plan_field(name, writers[name], rules) for name in sorted(writers)}
    return EntityPlan(
        policy=rules.policy,
        fallback=rules.fallback if rules.policy == "field-merge" else None,
        priority=rules.priority,
        deletes=rules.deletes,
        # Parking needs a manual field that two adapters can change concurrently, which is
        # narrower than Rules.may_park (it only reads the config).
        may_park=any(f.on_conflict == "manual" for f in fields.values()),
        fields=fields,
    )


def build_plan(
    cfg: RouterConfig, adapters: Sequence[AdapterConfig], origin: str = "router config"
) -> Plan:
    """Check the policies against the adapters (ConfigError) and plan every entity.

    ``origin`` names the router config in error messages.
    """
    check(cfg, adapters, origin)
    mapped = writers_by_entity(adapters)
    # After check() every [conflicts.*] entity is mapped: the adapters' entities are all.
    return {entity: plan_entity(cfg.rules(entity), mapped[entity]) for entity in sorted(mapped)}


def plan_to_json(plan: Plan) -> dict[str, Any]:
    """The ``--json`` document: {"entities": {entity: EntityPlan as a dict}}."""
    return {"entities": {entity: asdict(p) for entity, p in plan.items()}}


# -- I/O ---------------------------------------------------------------------------------------


def adapter_files(config: Path, adapters: Iterable[Path] | None) -> list[Path]:
    """The adapter config files: each item a file or a folder of *.toml (sorted).

    Default: the ``adapters/`` folder next to the router config.
    """
    items = list(adapters) if adapters else [config.parent / "adapters"]
    files: list[Path] = []
    for item in items:
        if not item.exists():
            hint = "" if adapters else " (the default next to the router config; pass --adapters)"
            raise ConfigError(f"{item}: no such adapter config file or folder{hint}")
        found = sorted(item.glob("*.toml")) if item.is_dir() else [item]
        # The same file named twice (a folder and a file in it) is still one adapter.
        files.extend(f for f in found if f.resolve() not in {g.resolve() for g in files})
    if not files:
        where = ", ".join(str(i) for i in items)
        raise ConfigError(f"no adapter config (*.toml) found in {where}")
    return files


def load_adapters(files: Sequence[Path]) -> list[AdapterConfig]:
    loaded: dict[str, Path] = {}
    configs: list[AdapterConfig] = []
    for path in files:
        adapter = load_adapter(path)
        if adapter.name in loaded:
            # Two configs of one name would be one actor: its writers would count twice.
            raise ConfigError(
                f"{path}: adapter name {adapter.name!r} is also used by {loaded[adapter.name]}"
            )
        loaded[adapter.name] = path
        configs.append(adapter)
    return configs


def render(plan: Plan, out: Console) -> None:
    """One header and one table per entity, then a note on each policy the table uses."""
    for entity, p in plan.items():
        out.print(_header(entity, p), highlight=False)
        # No vertical rules, no edges, shared padding: an owner sentence fits in 100 columns.
        table = Table(
            "field",
            "written by",
            "on conflict",
            "owner",
            box=box.SIMPLE_HEAD,
            show_edge=False,
            collapse_padding=True,
        )
        for name, f in p.fields.items():
            table.add_row(name, ", ".join(f.writers), f.on_conflict, f.owner)
        out.print(table)
        used = sorted({f.on_conflict for f in p.fields.values()} - {"none"})
        notes = [
            "A field only one side of a concurrent change changed is always kept.",
            *(POLICY_NOTES[policy] for policy in used),
            f"deletes = {p.deletes}: {DELETE_NOTES[p.deletes]}.",
        ]
        for note in notes:
            # Wrapped here, not by rich, so continuation lines stay indented.
            for line in textwrap.wrap(note, max(out.width - 2, 40)):
                out.print(f"  {line}", highlight=False, markup=False)
        out.print()


def _header(entity: str, p: EntityPlan) -> str:
    policy = f"{p.policy} (fallback {p.fallback})" if p.fallback else p.policy
    parks = "may park" if p.may_park else "never parks"
    header = f"[bold]{entity}[/]: policy {policy}, deletes {p.deletes}, {parks}"
    if p.priority:
        # The operator comes first: its values outrank every CRM (Rules.rank).
        header += f"\n  priority: {' > '.join((OPERATOR, *p.priority))}"
    return header


def run_check(config: Path, adapters: list[Path] | None, as_json: bool, out: Console) -> None:
    """``crmsync policy check``: load, check, print the plan (a dry run)."""
    cfg = load_router(config)
    plan = build_plan(cfg, load_adapters(adapter_files(config, adapters)), origin=str(config))
    if as_json:
        # Plain stdout, not rich: a script reads it, so no colour or wrapping.
        sys.stdout.write(json.dumps(plan_to_json(plan), indent=2, sort_keys=True) + "\n")
        return
    render(plan, out)
