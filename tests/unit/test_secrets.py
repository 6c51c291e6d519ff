"""Secrets stay secret (issue 13, item 6): a password from password_file is URL-encoded
into the broker URL, redaction never shows a password whatever characters it holds,
a secret file others can read is warned about, and [broker.tls] with amqp:// is refused."""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from router.broker.settings import redact
from router.config import BrokerConfig
from router.errors import ConfigError

USERS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_.", min_size=1, max_size=12)
HOSTS = st.sampled_from(["rabbit:5672/", "10.0.0.7:5671/crm", "mq.example.com/%2F", "h/v@x"])


@given(user=USERS, password=st.text(min_size=1), host=HOSTS)
def test_redaction_never_shows_the_password_encoded_or_not(
    user: str, password: str, host: str
) -> None:
    for written in (password, quote(password, safe="")):
        shown = redact(f"amqp://{user}:{written}@{host}")
        assert shown.startswith(f"amqp://{user}:***@")
        if "@" not in host:
            assert shown == f"amqp://{user}:***@{host}"


def test_a_url_without_a_password_is_shown_as_it_is() -> None:
    assert redact("amqp://rabbit:5672/") == "amqp://rabbit:5672/"
    assert redact("amqp://guest@rabbit/") == "amqp://guest@rabbit/"


# Printable text: a password file holds one line (control characters would be a
# different file format, not a password).
PRINTABLE = st.characters(blacklist_categories=("Cs", "Cc"))


@given(password=st.text(PRINTABLE, min_size=1).filter(lambda p: p.strip() == p and p))
def test_a_password_file_is_encoded_into_the_url(
    tmp_path_factory: pytest.TempPathFactory, password: str
) -> None:
    secret = tmp_path_factory.mktemp("s") / "secret"
    secret.write_text(password + "\n")
    secret.chmod(0o600)
    url = BrokerConfig(url="amqp://legacy@rabbit:5672/vh", password_file=secret).effective_url()
    parts = urlsplit(url)
    assert (parts.username, unquote(parts.password or ""), parts.hostname, parts.port) == (
        "legacy",
        password,
        "rabbit",
        5672,
    )
    assert redact(url) == "amqp://legacy:***@rabbit:5672/vh"


def test_a_secret_file_others_can_read_is_warned_about_without_its_content(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secret = tmp_path / "secret"
    secret.write_text("hunter2#/?\n")
    secret.chmod(0o644)
    broker = BrokerConfig(url="amqp://legacy@rabbit/", password_file=secret)
    with caplog.at_level(logging.WARNING, logger="crmsync.config"):
        broker.effective_url()
    assert "readable by other users" in caplog.text
    assert "hunter2" not in caplog.text
    caplog.clear()
    secret.chmod(0o600)
    with caplog.at_level(logging.WARNING, logger="crmsync.config"):
        broker.effective_url()
    assert caplog.text == ""


def test_an_empty_or_missing_password_file_is_one_line(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(ConfigError, match=r"broker\.password_file: .* is empty"):
        BrokerConfig(url="amqp://u@h/", password_file=empty).effective_url()
    with pytest.raises(ConfigError, match=r"broker\.password_file: cannot read"):
        BrokerConfig(url="amqp://u@h/", password_file=tmp_path / "nope").effective_url()


def test_tls_with_a_plaintext_url_is_a_configuration_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ValueError, match=r"broker\.tls needs an amqps:// broker\.url"):
        BrokerConfig(url="amqp://u:p@h/", tls={"ca_file": str(tmp_path / "ca.pem")})  # type: ignore[arg-type]
    ok = BrokerConfig(url="amqps://u:p@h/", tls={"ca_file": str(tmp_path / "ca.pem")})  # type: ignore[arg-type]
    monkeypatch.setenv("CRMSYNC_AMQP_URL", "amqp://u:p@h/")
    with pytest.raises(ConfigError, match="is not an amqps:// URL"):
        ok.effective_url()


def test_a_config_holding_a_password_that_others_can_read_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from router.config import load_router

    config = tmp_path / "router.toml"
    config.write_text('[broker]\nurl = "amqp://ops:s3cr3t@rabbit:5672/"\n')
    config.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="crmsync.config"):
        load_router(config)
    assert "readable by other users" in caplog.text and "s3cr3t" not in caplog.text
    caplog.clear()
    config.write_text('[broker]\nurl = "amqp://rabbit:5672/"\n')  # no secret: no warning
    with caplog.at_level(logging.WARNING, logger="crmsync.config"):
        load_router(config)
    assert caplog.text == ""
    config.write_text(
        '[broker]\nurl = "amqp://guest:guest@127.0.0.1:5672/"\n'
    )  # RabbitMQ's default
    with caplog.at_level(logging.WARNING, logger="crmsync.config"):
        load_router(config)
    assert caplog.text == ""
