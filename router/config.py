"""TOML configuration validated with pydantic.

Every model forbids unknown keys, so a typo (``pol_interval``) is an error that names
the key and the file instead of a silently ignored setting. ``CRMSYNC_AMQP_URL``
overrides the broker URL everywhere.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import quote

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from router.errors import ConfigError
from router.events import ENTITY_RE, NAME_RE
from router.logs import kv
from router.policies import OPERATOR, Rules

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
AMQP_URL_ENV = "CRMSYNC_AMQP_URL"

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """``"1.5s"``, ``"10m"``, ``"250ms"`` -> seconds."""
    match = _DURATION_RE.match(text)
    if not match:
        raise ValueError(f"not a duration: {text!r} (use e.g. 500ms, 1s, 10m, 1h)")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def _valid_duration(text: str) -> str:
    parse_duration(text)
    return text


# Kept as written (it also names the retry queues); parse_duration() gives seconds.
Duration = Annotated[str, AfterValidator(_valid_duration)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TlsConfig(Strict):
    # Without ca_file the system's CA store decides which broker certificates are trusted.
    ca_file: Path | None = None
    cert_file: Path | None = None  # the client certificate (a broker with verify_peer needs it)
    key_file: Path | None = None  # absent: the key is in cert_file
    # The broker's certificate must name the host of broker.url (subjectAltName). Off, any
    # certificate the CA signed passes: only for a private CA that signs brokers alone.
    verify_hostname: bool = True

    @model_validator(mode="after")
    def _key_needs_cert(self) -> TlsConfig:
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("broker.tls.key_file needs broker.tls.cert_file (the certificate)")
        return self


class BrokerConfig(Strict):
    url: str = DEFAULT_AMQP_URL
    # Secrets stay out of the TOML: the password may come from a file or the environment.
    password_file: Path | None = None
    tls: TlsConfig | None = None
    # A half-open connection (peer gone, no FIN) is noticed after about two heartbeats.
    heartbeat: Duration = "10s"
    # A publish whose confirm has not come by then fails and is retried on a fresh channel:
    # a confirm lost with a dead connection must not stall an outbox forever.
    confirm_timeout: Duration = "30s"
    # RabbitMQ's management API, for `crmsync users` only; default http://HOST:15672 of
    # broker.url (https for amqps://).
    management_url: str | None = None

    @field_validator("heartbeat")
    @classmethod
    def _whole_seconds(cls, value: str) -> str:
        if not 1 <= parse_duration(value) <= 600:
            raise ValueError("broker.heartbeat must be between 1s and 600s")
        return value

    def heartbeat_seconds(self) -> int:
        """AMQP negotiates heartbeats in whole seconds."""
        return max(1, round(parse_duration(self.heartbeat)))

    @model_validator(mode="after")
    def _tls_needs_amqps(self) -> BrokerConfig:
        # Without this a [broker.tls] section would be ignored and the connection would go
        # in plaintext, which is exactly what the section was written to prevent.
        if self.tls is not None and not self.url.startswith("amqps://"):
            raise ValueError("broker.tls needs an amqps:// broker.url (it would be ignored)")
        return self

    def effective_url(self) -> str:
        url = os.environ.get(AMQP_URL_ENV) or self.url
        if self.tls is not None and not url.startswith("amqps://"):
            raise ConfigError(
                f"broker.tls is set but {AMQP_URL_ENV} is not an amqps:// URL; "
                "use amqps:// or drop [broker.tls]"
            )
        if self.password_file is not None and "@" not in url:
            raise ConfigError("broker.password_file needs a user in broker.url")
        if self.password_file is not None:
            secret = read_secret(self.password_file, "broker.password_file")
            scheme, rest = url.split("://", 1)
            creds, host = rest.rsplit("@", 1)
            user = creds.split(":", 1)[0]
            # Encoded, so '#', '/', '?' or '@' in a password cannot end the user part
            # early (and then be printed as the host in an error line).
            url = f"{scheme}://{user}:{quote(secret, safe='')}@{host}"
        return url


def read_secret(path: Path, key: str) -> str:
    """A secret kept in a file; a file others may read is worth a warning, not a refusal
    (a container's mounted secret is often 0644 and only readable inside it)."""
    try:
        text = path.read_text().strip()
        mode = path.stat().st_mode
    except OSError as e:
        raise ConfigError(f"{key}: cannot read {path} ({e.strerror})") from None
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        _warn_if_shared(path, key)
    if not text:
        raise ConfigError(f"{key}: {path} is empty")
    return text


class RouterStateConfig(Strict):
    url: str = "sqlite:///state/router.db"
    # Processed event ids kept for redelivery dedup: by age and by count (router.retention).
    inbox_retention: Duration = "24h"
    inbox_max_entries: Annotated[int, Field(ge=1000)] = 1_000_000
    # How long a deleted record's tombstone is kept once every subscriber got the delete.
    tombstone_retention: Duration = "720h"
    # How long the audit record of a resolved conflict is kept (open ones: until resolved).
    conflict_retention: Duration = "2160h"


class RouterTuning(Strict):
    batch_size: Annotated[int, Field(ge=1, le=5000)] = 512
    linger: Duration = "5ms"
    prefetch: Annotated[int, Field(ge=1, le=65535)] = 1024
    heartbeat_timeout: Duration = "30s"
    # Larger events are refused (reason too-large) before they are decoded.
    max_event_bytes: Annotated[int, Field(ge=1024, le=128 << 20)] = 1 << 20


class ConflictConfig(Strict):
    """``[conflicts.<entity>]``: how concurrent changes of one entity are resolved."""

    policy: Literal["lww", "priority", "field-merge", "manual"] = "lww"
    fallback: Literal["lww", "priority", "manual"] = "lww"
    priority: list[Annotated[str, Field(pattern=NAME_RE)]] = []
    deletes: Literal["update-wins", "delete-wins"] = "update-wins"
    fields: dict[
        Annotated[str, Field(pattern=ENTITY_RE)], Literal["lww", "priority", "manual"]
    ] = {}

    @model_validator(mode="after")
    def _consistent(self) -> ConflictConfig:
        rules = self.rules()
        uses_priority = (
            self.policy == "priority"
            or any(rules.for_field(name) == "priority" for name in self.fields)
            or (self.policy == "field-merge" and self.fallback == "priority")
        )
        if uses_priority and not self.priority:
            raise ValueError(
                'the priority policy needs a priority list, e.g. priority = ["erp", "sales"]'
            )
        if len(set(self.priority)) != len(self.priority):
            raise ValueError("priority lists a source twice")
        if OPERATOR in self.priority:
            raise ValueError(f"{OPERATOR!r} is the router itself, not a source to rank")
        return self

    def rules(self) -> Rules:
        return Rules(
            policy=self.policy,
            fallback=self.fallback,
            priority=tuple(self.priority),
            deletes=self.deletes,
            fields=dict(self.fields),
        )


class EntityConfig(Strict):
    """``[entities.<entity>]``: how the router recognises one customer across CRMs."""

    # Field names tried in order (router.identity): the first whose value matches an
    # existing record decides. Empty would silently match nothing: refused.
    match: Annotated[list[Annotated[str, Field(pattern=ENTITY_RE)]], Field(min_length=1)]

    @field_validator("match")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("match names a field twice")
        return value


class MetricsConfig(Strict):
    port: Annotated[int, Field(ge=0, le=65535)] = 0  # 0: no metrics endpoint


class SecurityConfig(Strict):
    """``[security]`` (router.authz): who may publish and ask what. Set, it binds every
    event and control request to the broker-verified user that sent it."""

    # adapter name -> the RabbitMQ user it connects as (docs/operations.md, Security).
    adapter_users: dict[Annotated[str, Field(pattern=NAME_RE)], str] = {}
    router_user: str | None = None  # sinks take deliveries only from this user
    operator_users: list[str] = Field(default_factory=list)  # op.* requests and replays

    @model_validator(mode="after")
    def _distinct(self) -> SecurityConfig:
        users = list(self.adapter_users.values())
        if len(set(users)) != len(users):
            raise ValueError("adapter_users: two adapters share a broker user")
        for user in [*self.operator_users, *([self.router_user] if self.router_user else [])]:
            if user in users:
                raise ValueError(f"user {user!r} is an adapter's: give each role its own user")
        if (self.router_user or self.operator_users) and not self.adapter_users:
            raise ValueError("router_user and operator_users need adapter_users")
        return self


class ReconcileConfig(Strict):
    """``[reconcile]``: periodic anti-entropy (router.daemon.antientropy); off without ``every``."""

    every: Duration | None = None  # time between the starts of two rounds
    # Records compared per second and per adapter: each round reads every record of the
    # hub and of each CRM, and a CRM's database (or API quota) must not feel it.
    rate: Annotated[float, Field(gt=0, le=1_000_000)] = 1000
    repair: bool = True  # false: only count and log the drift found

    @field_validator("every")
    @classmethod
    def _not_too_often(cls, value: str | None) -> str | None:
        if value is not None and parse_duration(value) < 1:
            raise ValueError("reconcile.every must be at least 1s")
        return value

    def interval(self) -> float | None:
        """Seconds between rounds; None when anti-entropy is off."""
        return parse_duration(self.every) if self.every is not None else None


class RouterConfig(Strict):
    broker: BrokerConfig = BrokerConfig()
    security: SecurityConfig = SecurityConfig()
    state: RouterStateConfig = RouterStateConfig()
    router: RouterTuning = RouterTuning()
    metrics: MetricsConfig = MetricsConfig()
    reconcile: ReconcileConfig = ReconcileConfig()
    conflicts: dict[Annotated[str, Field(pattern=ENTITY_RE)], ConflictConfig] = {}
    entities: dict[Annotated[str, Field(pattern=ENTITY_RE)], EntityConfig] = {}

    def match_keys(self) -> dict[str, tuple[str, ...]]:
        """entity -> its identity match keys, in order (entities without keys are absent)."""
        return {entity: tuple(e.match) for entity, e in self.entities.items()}

    def rules(self, entity: str) -> Rules:
        """The entity's conflict rules; an entity without a table uses ``lww``."""
        conflict = self.conflicts.get(entity)
        return conflict.rules() if conflict else Rules()


M = TypeVar("M", bound=BaseModel)


def _explain(err: ValidationError, path: Path) -> str:
    first = err.errors()[0]
    key = ".".join(str(p) for p in first["loc"])
    if first["type"] == "extra_forbidden":
        return f"{path}: unknown key '{key}'"
    if first["type"] == "missing":
        return f"{path}: missing key '{key}'"
    return f"{path}: key '{key}': {first['msg']}"


def load(model: type[M], path: Path | str, base: dict[str, Any] | None = None) -> M:
    """Read and validate ``path``. Relative paths inside are relative to the working directory."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not valid TOML: the file is not UTF-8") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    try:
        config = model.model_validate({**(base or {}), **raw})
    except ValidationError as e:
        raise ConfigError(_explain(e, path)) from None
    broker = getattr(config, "broker", None)
    if isinstance(broker, BrokerConfig) and _has_password(broker.url):
        _warn_if_shared(path, "broker.url (it holds a password)")
    return config


def _has_password(url: str) -> bool:
    """A password that is a secret: RabbitMQ's guest:guest (which it accepts only from
    localhost) is everyone's, and the shipped demo configs use it."""
    rest = url.partition("://")[2]
    creds = rest[: rest.rfind("@")] if "@" in rest else ""
    return ":" in creds and creds != "guest:guest"


def _warn_if_shared(path: Path, what: str) -> None:
    """A file holding a secret that other users may read: said once, never its content."""
    try:
        shared = path.stat().st_mode & (stat.S_IRGRP | stat.S_IROTH)
    except OSError:
        return
    if shared:
        logging.getLogger("crmsync.config").warning(
            "a secret file is readable by other users: chmod 600 it",
            extra=kv(key=what, path=str(path)),
        )


def load_router(path: Path | str) -> RouterConfig:
    return load(RouterConfig, path)
