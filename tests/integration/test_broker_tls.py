"""The system over TLS (issue 13, item 5): a RabbitMQ node of this module's own with a
mutual-TLS listener and a CA the test makes; router and adapters sync through it, both
clients (aio-pika: daemons and ``status``; pika: ``dlq``) connect with the client
certificate, and each way a TLS connect can fail is one line with exit 3.

The machine's broker (5672) is not touched. The node listens for TLS on 127.0.0.1 and on
127.0.0.2 (loopback too, on Linux), whose address the broker's certificate does not name:
the hostname-mismatch case without a second node or certificate.
"""

from __future__ import annotations

import base64
import json
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from router.broker.aio import connect
from router.broker.dlq import DlqBroker
from router.config import BrokerConfig
from router.demo.crms import CRMS, DemoDb
from router.errors import EXIT_BROKER, BrokerUnavailable
from router.status import run_status
from tests.integration.cli_runner import Result, assert_one_clear_line, run_cli
from tests.integration.spine import Spine
from tests.rabbit_node import RabbitNode, TlsListener
from tests.tls_certs import Pki, make_pki

pytestmark = pytest.mark.integration

MISNAMED = "127.0.0.2"  # a loopback address the broker's certificate does not name
WRONG_PASSWORD = "Wr0ng pa55#/?@word"  # characters that used to leak through redaction


@pytest.fixture(scope="module")
def tls_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Pki, RabbitNode]]:
    """One node for the module (~10 s to start): killed by its own process group after."""
    base = tmp_path_factory.mktemp("tls")
    pki = make_pki(base / "pki")
    listener = TlsListener(pki.ca, pki.server.cert, pki.server.key, hosts=("127.0.0.1", MISNAMED))
    node = RabbitNode(
        base / "node", name=f"crmsync-tls-{uuid.uuid4().hex[:8]}@localhost", tls=listener
    )
    try:
        node.start()
        yield pki, node
    finally:
        node.close()


def _tls_toml(ca: Path, cert: Path | None = None, key: Path | None = None) -> str:
    lines = ["[broker.tls]", f'ca_file = "{ca}"']
    if cert is not None:
        lines += [f'cert_file = "{cert}"', f'key_file = "{key}"']
    return "\n".join(lines) + "\n"


class TlsSpine(Spine):
    """The spine, every process and the test's own status calls with ``[broker.tls]``."""

    def __init__(self, workdir: Path, url: str, pki: Pki) -> None:
        super().__init__(workdir, url)
        # [broker.tls] after the other tables is still the broker table's (TOML allows it).
        tls = _tls_toml(pki.ca, pki.client.cert, pki.client.key)
        for name in ("router", *CRMS):
            with (workdir / f"{name}.toml").open("a") as config:
                config.write(tls)
        self.broker = BrokerConfig(
            url=url,
            tls={"ca_file": pki.ca, "cert_file": pki.client.cert, "key_file": pki.client.key},
        )

    def status(self) -> dict[str, Any]:
        return run_status(lambda: connect(self.broker, "crmsync-test"), 2.0)


def _connections(node: RabbitNode) -> list[dict[str, Any]]:
    request = urllib.request.Request(
        f"{node.mgmt_url}/api/connections?columns=name,ssl,peer_cert_subject,client_properties",
        headers={"Authorization": "Basic " + base64.b64encode(b"guest:guest").decode()},
    )
    with urllib.request.urlopen(request, timeout=5) as answer:
        return list(json.load(answer))


def test_the_system_syncs_over_mutual_tls(tls_node: tuple[Pki, RabbitNode], tmp_path: Path) -> None:
    pki, node = tls_node
    spine = TlsSpine(tmp_path, node.tls_url("localhost"), pki)
    try:
        spine.start(("legacy", "sales"))
        [email] = spine.dbs["legacy"].insert_contacts(1)
        spine.wait("the contact in sales", lambda: email in spine.dbs["sales"].contacts())
        theirs, ours = spine.dbs["sales"].contacts()[email], spine.dbs["legacy"].contacts()[email]
        assert {k: theirs[k] for k in ("first_name", "last_name", "phone")} == {
            k: ours[k] for k in ("first_name", "last_name", "phone")
        }

        # Every daemon really is on the TLS listener, with the client certificate.
        daemons = {"crmsync-router", "crmsync-adapter-legacy", "crmsync-adapter-sales"}
        spine.wait(
            "the daemons' connections listed",
            lambda: daemons <= {_name(c) for c in _connections(node)},
        )
        for conn in _connections(node):
            if _name(conn) in daemons:
                assert conn["ssl"] is True, conn
                assert "CN=client" in conn["peer_cert_subject"], conn

        config = str(tmp_path / "router.toml")
        status = run_cli("status", "--json", "--config", config, amqp=None)
        alive = {a["name"] for a in status.json()["adapters"] if a["alive"]}
        assert alive == {"legacy", "sales"}
        dlq = run_cli("dlq", "list", "--invalid", "--json", "--config", config, amqp=None)
        assert dlq.code == 0, dlq  # pika over the same TLS settings
        json.loads(dlq.stdout)
    finally:
        codes = spine.stop()
    assert all(code == 0 for code in codes.values()), f"unclean exits: {codes}"


def _name(conn: dict[str, Any]) -> str:
    return str((conn.get("client_properties") or {}).get("connection_name", ""))


def test_each_tls_failure_is_one_clear_line_with_exit_3(
    tls_node: tuple[Pki, RabbitNode], tmp_path: Path
) -> None:
    pki, node = tls_node
    secret = tmp_path / "password"
    secret.write_text(WRONG_PASSWORD + "\n")
    secret.chmod(0o600)
    client = (pki.client.cert, pki.client.key)
    cases = {
        "untrusted": (node.tls_url(), _tls_toml(pki.stranger, *client)),
        "mismatch": (node.tls_url(MISNAMED), _tls_toml(pki.ca, *client)),
        "no-client-cert": (node.tls_url(), _tls_toml(pki.ca)),
        "password": (
            node.tls_url(user="guest"),
            f'password_file = "{secret}"\n' + _tls_toml(pki.ca, *client),
        ),
    }
    runs: dict[tuple[str, str], Any] = {}
    with ThreadPoolExecutor(4) as pool:
        for case, (url, tls) in cases.items():
            config = tmp_path / f"{case}.toml"
            config.write_text(f'[broker]\nurl = "{url}"\n' + tls)
            # aio-pika (status, as the daemons connect) and pika (the dlq commands)
            for command in (("status",), ("dlq", "list", "--invalid")):
                runs[case, command[0]] = pool.submit(
                    run_cli, *command, "--config", str(config), amqp=None
                )
        # a daemon connects as status does (router.broker.aio.connect) and stops at once
        # with the same line (supervisor restarts it); the adapter checks its tables first
        untrusted_url, untrusted_tls = cases["untrusted"]
        DemoDb(CRMS["legacy"], tmp_path / "legacy.db").close()
        (tmp_path / "adapter.toml").write_text(
            CRMS["legacy"].adapter_toml(
                tmp_path / "legacy.db", tmp_path / "legacy.state.db", untrusted_url
            )
            + untrusted_tls
        )
        runs["untrusted", "adapter"] = pool.submit(
            run_cli, "adapter", "--config", str(tmp_path / "adapter.toml"), amqp=None
        )
    for (case, client_lib), future in runs.items():
        result: Result = future.result()
        line = assert_one_clear_line(result)
        assert result.code == EXIT_BROKER, (case, client_lib, result)
        where = f"{case} via {client_lib}: {line}"
        if case == "untrusted":
            assert "certificate verify failed: self-signed certificate in certificate chain" in line
            assert line.endswith("check broker.tls.ca_file"), where
        elif case == "mismatch":
            assert f"IP address mismatch, certificate is not valid for '{MISNAMED}'" in line, where
            assert "subjectAltName" in line, where
        elif case == "no-client-cert":
            # the broker's alert, or (TLS 1.3 checks it late) the reset that beat it
            assert "client certificate" in line, where
            assert "set broker.tls.cert_file and broker.tls.key_file (none is set)" in line, where
        else:
            assert "refused the login of user 'guest' (ACCESS_REFUSED" in line, where
            for shown in (result.stdout, result.stderr):
                assert "Wr0ng" not in shown and "pa55" not in shown, where


async def test_verify_hostname_false_drops_the_name_check_and_only_that(
    tls_node: tuple[Pki, RabbitNode], monkeypatch: pytest.MonkeyPatch
) -> None:
    pki, node = tls_node
    monkeypatch.delenv("CRMSYNC_AMQP_URL", raising=False)  # the env would win over url

    def misnamed(ca: Path) -> BrokerConfig:
        tls = {"ca_file": ca, "cert_file": pki.client.cert, "key_file": pki.client.key}
        return BrokerConfig(url=node.tls_url(MISNAMED), tls={**tls, "verify_hostname": False})

    conn = await connect(misnamed(pki.ca), "crmsync-test")  # aio-pika
    await conn.close()
    with DlqBroker(misnamed(pki.ca)) as broker:  # pika
        assert not broker.exists("crmsync-no-such-queue")
    with pytest.raises(BrokerUnavailable, match=r"^certificate verify failed: self-signed"):
        await connect(misnamed(pki.stranger), "crmsync-test")
    with pytest.raises(BrokerUnavailable, match=r"^certificate verify failed: self-signed"):
        DlqBroker(misnamed(pki.stranger))
