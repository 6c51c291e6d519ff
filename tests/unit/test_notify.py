"""router/notify.py: sd_notify's datagram, and nothing at all outside systemd."""

from __future__ import annotations

import logging
import socket
import uuid
from pathlib import Path

import pytest

from router.notify import notify


def test_states_reach_the_notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(path))
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        assert notify("READY=1", "STATUS=active")
        assert listener.recv(4096) == b"READY=1\nSTATUS=active"


def test_an_abstract_socket_is_spelled_with_an_at(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"crmsync-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind("\0" + name)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert notify("STOPPING=1")
        assert listener.recv(4096) == b"STOPPING=1"


def test_outside_systemd_nothing_happens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify("READY=1") is False


def test_a_socket_that_is_gone_is_a_warning_not_a_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone.sock"))
    with caplog.at_level(logging.WARNING, logger="crmsync.notify"):
        assert notify("READY=1") is False
    assert "cannot notify the service manager" in caplog.text
