"""Configuration (router/config.py): TOML validated with pydantic; errors name key and file."""

from __future__ import annotations

from pathlib import Path

import pytest

from router.adapter_config import AdapterConfig, load_adapter
from router.config import (
    AMQP_URL_ENV,
    DEFAULT_AMQP_URL,
    BrokerConfig,
    RouterConfig,
    load_router,
    parse_duration,
)
from router.errors import EXIT_CONFIG, ConfigError

MINIMAL_ADAPTER = """\
name = "legacy"
[database]
url = "sqlite:///legacy.db"
[entities.contact]
table = "contacts"
[entities.contact.fields]
email = "email_addr"
"""


def write(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def config_error(load: object, path: Path) -> str:
    assert callable(load)
    with pytest.raises(ConfigError) as info:
        load(path)
    assert info.value.exit_code == EXIT_CONFIG
    message = str(info.value)
    assert "\n" not in message  # the CLI prints it as one line
    return message


@pytest.fixture(autouse=True)
def _no_env_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(AMQP_URL_ENV, raising=False)


# -- valid files -------------------------------------------------------------------------------


def test_empty_router_file_loads_with_defaults(tmp_path: Path) -> None:
    config = load_router(write(tmp_path, ""))
    assert isinstance(config, RouterConfig)
    assert config.broker.url == DEFAULT_AMQP_URL
    assert config.router.batch_size == 512
    assert config.conflicts == {}


def test_router_file_as_in_design(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
[broker]
url = "amqp://guest:guest@127.0.0.1:5672/"
[state]
url = "sqlite:////var/lib/crmsync/router.db"
[conflicts.contact]
policy = "field-merge"
fallback = "lww"
priority = ["sales", "legacy", "mktg"]
deletes = "update-wins"
[conflicts.contact.fields]
phone = "priority"
last_name = "manual"
""",
    )
    config = load_router(str(path))
    assert config.state.url == "sqlite:////var/lib/crmsync/router.db"
    contact = config.conflicts["contact"]
    assert contact.policy == "field-merge"
    assert contact.priority == ["sales", "legacy", "mktg"]
    assert contact.fields == {"phone": "priority", "last_name": "manual"}


def test_minimal_adapter_loads_with_defaults(tmp_path: Path) -> None:
    config = load_adapter(write(tmp_path, MINIMAL_ADAPTER))
    assert isinstance(config, AdapterConfig)
    assert config.name == "legacy"
    assert config.kind == "sql"
    assert config.database.url == "sqlite:///legacy.db"
    assert config.broker.url == DEFAULT_AMQP_URL
    assert config.capture.poll_interval == 0.5
    assert config.retry.delays == ["1s", "10s", "1m", "10m"]
    mapping = config.entities["contact"]
    assert mapping.table == "contacts"
    assert mapping.id == "id"
    assert mapping.updated_at == "updated_at"
    assert mapping.deleted is None
    assert mapping.fields == {"email": "email_addr"}


def test_adapter_file_as_in_design(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
name = "legacy"
kind = "sql"
[broker]
url = "amqp://guest:guest@127.0.0.1:5672/"
[database]
url = "sqlite:////var/lib/crmsync/legacy.db"
[capture]
poll_interval = 0.5
[state]
path = "/var/lib/crmsync/legacy.state.db"
[retry]
delays = ["1s", "10s", "1m", "10m"]
[entities.contact]
table = "contacts"
id = "id"
updated_at = "updated_at"
deleted = "is_deleted"
[entities.contact.fields]
email = "email_addr"
first_name = "fname"
""",
    )
    config = load_adapter(path)
    assert config.state.path == Path("/var/lib/crmsync/legacy.state.db")
    assert config.entities["contact"].deleted == "is_deleted"
    assert [parse_duration(d) for d in config.retry.delays] == [1, 10, 60, 600]


# -- errors name the key and the file ------------------------------------------------------------


def test_unknown_key_names_key_and_file(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL_ADAPTER + "[capture]\npol_interval = 0.5\n")
    message = config_error(load_adapter, path)
    assert "pol_interval" in message
    assert str(path) in message


def test_unknown_top_level_router_key(tmp_path: Path) -> None:
    path = write(tmp_path, "[brokr]\nurl = 'amqp://x'\n")
    message = config_error(load_router, path)
    assert "brokr" in message
    assert str(path) in message


def test_missing_required_key_is_named(tmp_path: Path) -> None:
    text = MINIMAL_ADAPTER.replace('[database]\nurl = "sqlite:///legacy.db"\n', "")
    assert "database" not in text
    path = write(tmp_path, text)
    message = config_error(load_adapter, path)
    assert "database" in message
    assert str(path) in message


def test_wrong_type_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL_ADAPTER + "[capture]\npoll_interval = 'fast'\n")
    message = config_error(load_adapter, path)
    assert "capture.poll_interval" in message
    assert str(path) in message


@pytest.mark.parametrize(
    "content",
    [b"[broker\nurl = 1\n", b"url = \n", b"a = 1\na = 2\n", b"\xff\xfe[broker]\n"],
    ids=["unclosed-table", "missing-value", "duplicate-key", "not-utf8"],
)
def test_invalid_toml_is_a_config_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "router.toml"
    path.write_bytes(content)
    message = config_error(load_router, path)
    assert str(path) in message


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    message = config_error(load_router, path)
    assert str(path) in message
    config_error(load_adapter, path)


def test_bad_retry_duration_is_a_config_error(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL_ADAPTER + '[retry]\ndelays = ["1s", "10 parsecs"]\n')
    message = config_error(load_adapter, path)
    assert "retry.delays" in message
    assert "10 parsecs" in message
    assert str(path) in message


def test_bad_router_duration_is_a_config_error(tmp_path: Path) -> None:
    path = write(tmp_path, "[router]\nlinger = 'soon'\n")
    message = config_error(load_router, path)
    assert "router.linger" in message


@pytest.mark.parametrize("name", ["hub", "router"])
def test_reserved_adapter_name_is_refused(tmp_path: Path, name: str) -> None:
    path = write(tmp_path, MINIMAL_ADAPTER.replace('name = "legacy"', f'name = "{name}"'))
    message = config_error(load_adapter, path)
    assert "name" in message
    assert "reserved" in message


def test_adapter_name_must_be_a_valid_name(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL_ADAPTER.replace('name = "legacy"', 'name = "Legacy CRM"'))
    assert "name" in config_error(load_adapter, path)


def test_adapter_entity_must_map_a_field(tmp_path: Path) -> None:
    text = MINIMAL_ADAPTER.replace('email = "email_addr"\n', "")
    path = write(tmp_path, text)
    assert "entities.contact.fields" in config_error(load_adapter, path)


# -- durations ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("250ms", 0.25),
        ("1m", 60.0),
        ("1s", 1.0),
        ("1.5s", 1.5),
        ("10m", 600.0),
        ("1h", 3600.0),
        (" 2s ", 2.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["10 parsecs", "", "10", "s", "-1s", "1d", "1.s"])
def test_parse_duration_refuses_nonsense(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


# -- broker URL override ---------------------------------------------------------------------


def test_env_overrides_broker_url(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = write(tmp_path, "[broker]\nurl = 'amqp://file:file@filehost:5672/'\n")
    config = load_router(path)
    assert config.broker.effective_url() == "amqp://file:file@filehost:5672/"
    monkeypatch.setenv(AMQP_URL_ENV, "amqp://env:env@envhost:5672/vh")
    assert config.broker.effective_url() == "amqp://env:env@envhost:5672/vh"
    assert BrokerConfig().effective_url() == "amqp://env:env@envhost:5672/vh"


def test_without_env_the_default_url_is_used() -> None:
    assert BrokerConfig().effective_url() == DEFAULT_AMQP_URL


def test_password_file_fills_the_password(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    broker = BrokerConfig(url="amqp://legacy@rabbit:5672/", password_file=secret)
    assert broker.effective_url() == "amqp://legacy:s3cret@rabbit:5672/"


def test_retention_keys_are_validated_and_named(tmp_path: Path) -> None:
    path = write(tmp_path, '[state]\ntombstone_retention = "30 days"\n')
    message = config_error(load_router, path)
    assert "state.tombstone_retention" in message and str(path) in message
    path = write(tmp_path, "[state]\ninbox_max_entries = 10\n")
    assert "state.inbox_max_entries" in config_error(load_router, path)
    path = write(tmp_path, '[state]\ninbox_retention = "1h"\ninbox_max_entries = 50000\n')
    state = load_router(path).state
    assert (state.inbox_retention, state.inbox_max_entries) == ("1h", 50000)
    assert state.tombstone_retention == "720h"  # 30 days unless told


def test_broker_heartbeat_is_whole_seconds_within_amqps_range() -> None:
    assert BrokerConfig().heartbeat_seconds() == 10
    assert BrokerConfig(heartbeat="1500ms").heartbeat_seconds() == 2
    for bad in ("0s", "500ms", "11m"):
        with pytest.raises(ValueError, match=r"broker\.heartbeat must be between 1s and 600s"):
            BrokerConfig(heartbeat=bad)


# -- [canonical] and [sink] (issue 11) ----------------------------------------------------------


def test_canonical_and_sink_default_to_no_country_empties_as_null_and_no_cap(
    tmp_path: Path,
) -> None:
    config = load_adapter(write(tmp_path, MINIMAL_ADAPTER))
    assert config.canonical.default_country is None
    assert config.canonical.empty_as_null is True
    assert config.sink.max_rate is None


def test_canonical_and_sink_are_read(tmp_path: Path) -> None:
    text = MINIMAL_ADAPTER + (
        '[canonical]\ndefault_country = "DE"\nempty_as_null = false\n[sink]\nmax_rate = 2.5\n'
    )
    config = load_adapter(write(tmp_path, text))
    assert (config.canonical.default_country, config.canonical.empty_as_null) == ("DE", False)
    assert config.sink.max_rate == 2.5


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ('[canonical]\ndefault_country = "Germany"\n', "key 'canonical.default_country'"),
        ('[canonical]\ndefault_country = "XX"\n', "ISO 3166 alpha-2"),
        ("[canonical]\ndefault_region = 1\n", "unknown key 'canonical.default_region'"),
        ('[canonical]\nempty_as_null = "maybe"\n', "key 'canonical.empty_as_null'"),
        ("[sink]\nmax_rate = 0\n", "key 'sink.max_rate'"),
        ("[sink]\nmax_rate = -3\n", "greater than 0"),
        ("[sink]\nrate = 5\n", "unknown key 'sink.rate'"),
    ],
)
def test_bad_canonical_and_sink_keys_are_named(tmp_path: Path, section: str, expected: str) -> None:
    assert expected in config_error(load_adapter, write(tmp_path, MINIMAL_ADAPTER + section))
