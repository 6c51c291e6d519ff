"""The adapter TOML (``config/adapters/*.toml``), validated like the router's.

One model serves every adapter kind: the sections shared by all (broker, capture,
retry, canonical, sink, write, entities) and one section per kind (``[database]`` for
``sql``, ``[api]`` for ``hubspot``; ``file`` needs none). A section or entity key the
kind needs and lacks is an error that names it. docs/writing-an-adapter.md is the
reference of every key.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from router.config import BrokerConfig, Duration, MetricsConfig, Strict, load, parse_duration
from router.events import ENTITY_RE, NAME_RE
from router.transform_config import EntityTransforms, FieldTransform, NameSplit

FieldName = Annotated[str, Field(pattern=ENTITY_RE)]
Kind = Literal["sql", "hubspot", "file", "plugin"]
# ``plugin``: "package.module:ClassName", an Adapter subclass of the user's own.
_PLUGIN_RE = r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$"
HUBSPOT_URL = "https://api.hubapi.com"

_RATE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(\d*(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")


def parse_rate(text: str) -> tuple[float, float]:
    """``"100/10s"`` -> (100 writes, per 10.0 seconds); ``"5/s"`` -> (5, 1.0)."""
    match = _RATE_RE.match(text)
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"not a rate: {text!r} (use e.g. 100/10s, 5/s, 10000/d)")
    count, amount, unit = match.groups()
    if unit == "d":
        seconds = 86400.0 * float(amount or 1)
    else:
        seconds = parse_duration(f"{amount or 1}{unit}")
    if seconds <= 0:
        raise ValueError(f"not a rate: {text!r} (the period must be longer than zero)")
    return float(count), seconds


def _valid_rate(text: str) -> str:
    parse_rate(text)
    return text


class CaptureConfig(Strict):
    poll_interval: Annotated[float, Field(gt=0, le=3600)] = 0.5
    overlap: Duration = "2s"
    batch_size: Annotated[int, Field(ge=1, le=100000)] = 500
    # Hard deletes: a trigger journals deleted ids (true), or, where the adapter may not
    # install triggers, one chunk of links is compared with the table's ids per scan.
    delete_journal: bool = True
    hard_delete_scan_every: Annotated[int, Field(ge=1)] = 1
    hard_delete_chunk: Annotated[int, Field(ge=1, le=1_000_000)] = 10000
    # What the first start publishes: every row the CRM holds ("all": it joins with its
    # data, matched by the router's identity keys), or nothing before that moment
    # ("none": a CRM that must only receive; its existing rows are never shared).
    initial: Literal["all", "none"] = "all"
    # PostgreSQL only: a trigger NOTIFYs the adapter on every change, so capture runs at
    # once instead of at the next poll; polling stays the catch-up path.
    push: bool = False


class CanonicalConfig(Strict):
    """``[canonical]``: how the adapter cleanses values (adapters.cleansing)."""

    # ISO 3166 alpha-2; phone numbers without +country are read in this region and all
    # become E.164. Absent: phone numbers are only trimmed.
    default_country: str | None = None
    # "" and whitespace-only strings become null.
    empty_as_null: bool = True

    @field_validator("default_country")
    @classmethod
    def _region(cls, value: str | None) -> str | None:
        if value is None:
            return value
        import phonenumbers  # only adapters that configure a country pay for the import

        if value not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError('not an ISO 3166 alpha-2 country code (e.g. "DE", "US", "GB")')
        return value


class SinkConfig(Strict):
    """``[sink]``: writes into this CRM."""

    # Records per second written into the CRM, whatever writes them (live sync and
    # migrations alike); absent: unlimited. A migration's --rate may lower it for a while.
    max_rate: Annotated[float, Field(gt=0)] | None = None


class WriteConfig(Strict):
    """``[write]``: the CRM's own write quota, as its vendor states it."""

    # Writes per period ("100/10s", "5/s", "250000/d"): one token bucket in front of
    # every write, whatever sends it; with [sink] max_rate the lower of the two applies.
    rate: Annotated[str, Field(min_length=1)] | None = None

    @field_validator("rate")
    @classmethod
    def _rate(cls, value: str | None) -> str | None:
        return value if value is None else _valid_rate(value)

    def per_second(self) -> float | None:
        if self.rate is None:
            return None
        count, seconds = parse_rate(self.rate)
        return count / seconds


class AdapterStateConfig(Strict):
    path: Path = Path("state/adapter.state.db")


class RetryConfig(Strict):
    delays: list[Duration] = Field(default_factory=lambda: ["1s", "10s", "1m", "10m"])

    def tiers(self) -> list[tuple[str, float]]:
        """(label, seconds) per back-off tier; the label names the tier's queue."""
        return [(delay, parse_duration(delay)) for delay in self.delays]


class DatabaseConfig(Strict):
    url: str


class ApiConfig(Strict):
    """``[api]``: an HTTP CRM (``kind = "hubspot"``)."""

    base_url: Annotated[str, Field(pattern=r"^https?://")] = HUBSPOT_URL
    # A file holding the private-app token (never the token itself in the TOML).
    token_file: Path
    # The account's limits (HubSpot: 100 or 190 per 10 s by tier; 250,000+ a day). The
    # adapter keeps under them for capture and writes together.
    requests_per_10s: Annotated[int, Field(ge=1, le=10_000)] = 100
    daily: Annotated[int, Field(ge=1)] = 250_000
    # How far back each search starts again: search lags writes by up to a minute.
    search_lag: Duration = "60s"
    timeout: Duration = "30s"


Value = str | bool | int | float
Column = Annotated[str, Field(min_length=1, max_length=255)]


class LinkTable(Strict):
    """A table that joins a record to another row (SuiteCRM's ``email_addr_bean_rel``,
    ``accounts_contacts``): one row per pair, soft-deleted by a flag where it has one."""

    table: Column
    id: Annotated[str, Field(max_length=255)] = "id"  # "": no key column of its own
    record: Column  # the column holding this record's id
    other: Column  # the column holding the other row's id
    # Rows that count (read) and the values every new row gets (write).
    where: dict[Column, Value] = Field(default_factory=dict)
    deleted: Column | None = None
    updated_at: Column | None = None  # stamped on write; a change here is the record's
    created_at: Column | None = None


class RelatedField(Strict):
    """``[entities.<e>.related.<field>]``: a canonical field stored in another table,
    reached through a link table (SuiteCRM's primary email)."""

    table: Column
    id: Column = "id"
    column: Column  # the value
    # Columns computed from the value on write (SuiteCRM: email_address_caps = "upper").
    derived: dict[Column, Literal["upper", "lower"]] = Field(default_factory=dict)
    # Related rows are shared by value: a write links the row whose `match` column
    # equals the value's (derived) form, and inserts one only where none exists.
    match: Column | None = None
    deleted: Column | None = None
    updated_at: Column | None = None
    created_at: Column | None = None
    link: LinkTable

    @model_validator(mode="after")
    def _match_known(self) -> RelatedField:
        if self.match is not None and self.match not in (self.column, *self.derived):
            raise ValueError("match must be the column or one of the derived columns")
        return self


class Reference(Strict):
    """``[entities.<e>.references.<field>]``: the canonical value is the referenced
    record's global id; in the CRM it is that record's own id, in a foreign-key
    ``column`` of this table or in a ``link`` table (``link.other``)."""

    entity: FieldName
    column: Column | None = None
    link: LinkTable | None = None

    @model_validator(mode="after")
    def _one_place(self) -> Reference:
        if (self.column is None) == (self.link is None):
            raise ValueError("give either column or link")
        return self


class EntityMapping(Strict):
    # sql: the table; hubspot: the object type ("contacts"); file: the file's path.
    table: str | None = None
    object: str | None = None
    path: Path | None = None
    format: Literal["csv", "jsonl"] | None = None  # file: absent = from the suffix
    id: str = "id"
    updated_at: str = "updated_at"
    created_at: str | None = None  # sql: stamped on insert (SuiteCRM date_entered)
    deleted: str | None = None
    # The value of `deleted` that means deleted: false for an "active" flag used as a
    # delete (an archive flag that only hides a record is better mapped as a field).
    deleted_value: bool = True
    fields: dict[FieldName, str]
    # sql: fields in related tables, references to other entities, and the rows of a
    # table shared by several entities (Odoo's res_partner: is_company), which every
    # insert also gets.
    related: dict[FieldName, RelatedField] = Field(default_factory=dict)
    references: dict[FieldName, Reference] = Field(default_factory=dict)
    filter: dict[Column, Value] = Field(default_factory=dict)
    # Mapping transforms (docs/transforms.md).
    transforms: dict[FieldName, FieldTransform] = Field(default_factory=dict)
    names: NameSplit | None = None
    constants: dict[str, str | bool | int | float] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _transforms_consistent(self) -> EntityMapping:
        # EntityTransforms checks that no two transforms claim one column.
        try:
            EntityTransforms(transforms=self.transforms, names=self.names, constants=self.constants)
        except ValidationError as e:
            raise ValueError(e.errors()[0]["msg"].removeprefix("Value error, ")) from None
        return self

    @field_validator("fields")
    @classmethod
    def _non_empty(cls, value: dict[str, str]) -> dict[str, str]:
        if not value:
            raise ValueError("map at least one field")
        return value

    @model_validator(mode="after")
    def _fields_once(self) -> EntityMapping:
        for name in (*self.related, *self.references):
            if name in self.fields or name in self.transforms:
                raise ValueError(f"field {name!r} is both a column and a related/reference")
        both = set(self.related) & set(self.references)
        if both:
            raise ValueError(f"field {sorted(both)[0]!r} is both related and a reference")
        return self

    def field_names(self) -> list[str]:
        """Every canonical field this entity maps, wherever the CRM keeps it."""
        names = {*self.fields, *self.transforms, *self.related, *self.references}
        if self.names is not None:
            names |= {self.names.first, self.names.last}
        return sorted(names)

    def file_format(self) -> Literal["csv", "jsonl"]:
        if self.format is not None:
            return self.format
        assert self.path is not None  # AdapterConfig checks file entities have a path
        return "csv" if self.path.suffix.lower() == ".csv" else "jsonl"


# The entity key each kind needs, and the keys that mean nothing to it.
_ENTITY_KEYS: dict[str, tuple[str, tuple[str, ...]]] = {
    "sql": ("table", ("object", "path", "format")),
    "hubspot": ("object", ("table", "path", "format")),
    "file": ("path", ("table", "object")),
    "plugin": ("object", ("table", "path", "format")),
}


class AdapterConfig(Strict):
    name: Annotated[str, Field(pattern=NAME_RE)]
    kind: Kind = "sql"
    broker: BrokerConfig = BrokerConfig()
    # sql: the CRM's database (links live beside the data). Other kinds: where the links
    # live; absent, a SQLite file beside the state file.
    database: DatabaseConfig | None = None
    api: ApiConfig | None = None
    # kind = "plugin": the class to load, and its own settings (it validates them).
    plugin: Annotated[str, Field(pattern=_PLUGIN_RE)] | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    capture: CaptureConfig = CaptureConfig()
    state: AdapterStateConfig = AdapterStateConfig()
    retry: RetryConfig = RetryConfig()
    canonical: CanonicalConfig = CanonicalConfig()
    sink: SinkConfig = SinkConfig()
    write: WriteConfig = WriteConfig()
    metrics: MetricsConfig = MetricsConfig()  # port: Prometheus on 127.0.0.1 (0: none)
    heartbeat_interval: Annotated[float, Field(gt=0, le=3600)] = 5.0
    entities: dict[FieldName, EntityMapping]

    @field_validator("name")
    @classmethod
    def _not_hub(cls, value: str) -> str:
        if value in ("hub", "router"):
            raise ValueError(f"{value!r} is reserved")
        return value

    @model_validator(mode="after")
    def _kind_sections(self) -> AdapterConfig:
        if self.kind == "sql" and self.database is None:
            raise ValueError('kind = "sql" needs [database] url')
        if self.kind == "hubspot" and self.api is None:
            raise ValueError('kind = "hubspot" needs [api] token_file')
        if (self.kind == "plugin") != (self.plugin is not None):
            raise ValueError('kind = "plugin" and plugin = "module:Class" go together')
        if self.options and self.kind != "plugin":
            raise ValueError(f'[options] applies to kind = "plugin", not {self.kind!r}')
        if self.kind != "hubspot" and self.api is not None:
            raise ValueError(f'[api] applies to kind = "hubspot", not {self.kind!r}')
        if self.capture.push and self.kind != "sql":
            raise ValueError(f'capture.push applies to kind = "sql", not {self.kind!r}')
        needed, foreign = _ENTITY_KEYS[self.kind]
        for entity, mapping in self.entities.items():
            if self.kind != "sql" and (mapping.related or mapping.references or mapping.filter):
                raise ValueError(
                    f'entities.{entity}: related, references and filter apply to kind = "sql"'
                )
            for name, ref in mapping.references.items():
                if ref.entity not in self.entities:
                    raise ValueError(
                        f"entities.{entity}.references.{name}.entity: {ref.entity!r} is not "
                        "an entity of this adapter"
                    )
            if getattr(mapping, needed) is None:
                raise ValueError(f"entities.{entity}.{needed} is missing (kind = {self.kind!r})")
            for key in foreign:
                if getattr(mapping, key) is not None:
                    raise ValueError(
                        f"entities.{entity}.{key} does not apply to kind = {self.kind!r}"
                    )
        return self

    @property
    def links_url(self) -> str:
        """Where the links live: the CRM's database for sql, else [database] or a SQLite
        file beside the state file."""
        if self.database is not None:
            return self.database.url
        return f"sqlite:///{self.state.path.parent / (self.name + '.links.db')}"

    def write_rate(self) -> float | None:
        """Writes per second allowed into this CRM: the lower of [sink] max_rate and
        [write] rate; None when neither is set."""
        rates = [r for r in (self.sink.max_rate, self.write.per_second()) if r is not None]
        return min(rates) if rates else None


def load_adapter(path: Path | str) -> AdapterConfig:
    return load(AdapterConfig, path)
