"""Certificates a test makes for itself: a CA, a broker certificate and a client one.

Made with the ``openssl`` command (always beside a RabbitMQ server package, and no new
Python dependency). EC P-256 keys: generating one takes milliseconds where RSA takes a
noticeable fraction of a second on a busy CI machine. Everything lives in the folder the
test gives; nothing is installed anywhere.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

DAYS = "2"  # the test's own CA: long enough for one run, useless if it leaks


@dataclass(frozen=True)
class Pair:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    """``ca`` signed ``server`` (SAN: ``localhost``, ``127.0.0.1``) and ``client``;
    ``stranger`` is a second CA that signed nothing of the broker's."""

    ca: Path
    server: Pair
    client: Pair
    stranger: Path


def _openssl(*args: str, cwd: Path) -> None:
    tool = shutil.which("openssl")
    if tool is None:
        raise RuntimeError("the openssl command is needed to make the tests' certificates")
    done = subprocess.run(
        [tool, *args], cwd=cwd, capture_output=True, text=True, timeout=30, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"openssl {args[0]}: {done.stderr.strip()}")


_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")


def _ca(folder: Path, name: str) -> Pair:
    pair = Pair(folder / f"{name}.pem", folder / f"{name}.key")
    _openssl(
        "req", "-x509", *_KEY, "-keyout", str(pair.key), "-out", str(pair.cert),
        "-days", DAYS, "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=folder,
    )  # fmt: skip
    return pair


def _leaf(folder: Path, ca: Pair, name: str, extensions: str) -> Pair:
    pair = Pair(folder / f"{name}.pem", folder / f"{name}.key")
    csr = folder / f"{name}.csr"
    ext = folder / f"{name}.ext"
    ext.write_text(
        "basicConstraints=CA:FALSE\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid\n" + extensions
    )
    _openssl(
        "req", "-new", *_KEY, "-keyout", str(pair.key), "-out", str(csr),
        "-subj", f"/CN={name}",
        cwd=folder,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca.cert), "-CAkey", str(ca.key),
        "-CAcreateserial", "-out", str(pair.cert), "-days", DAYS, "-extfile", str(ext),
        cwd=folder,
    )  # fmt: skip
    pair.key.chmod(0o600)
    return pair


def make_pki(folder: Path) -> Pki:
    folder.mkdir(parents=True, exist_ok=True)
    ca = _ca(folder, "crmsync-test-ca")
    server = _leaf(
        folder,
        ca,
        "broker",
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    client = _leaf(folder, ca, "client", "extendedKeyUsage=clientAuth\n")
    stranger = _ca(folder, "stranger-ca")
    return Pki(ca.cert, server, client, stranger.cert)
