"""systemd's readiness protocol (sd_notify), for ``Type=notify`` units.

systemd starts a unit's dependants, and ``systemctl start`` returns, only once the
process says ``READY=1``: for the router, when it consumes (or waits as a hot standby);
for an adapter, when it has registered and consumes its sink. ``STOPPING=1`` marks the
drain. Outside systemd (no ``NOTIFY_SOCKET``) every call does nothing. The protocol is
one datagram on a Unix socket, which is all this module does: no library needed.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger("crmsync.notify")


def notify(*states: str) -> bool:
    """Send ``states`` (``"READY=1"``, ``"STATUS=..."``) to systemd; False if not under it."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall("\n".join(states).encode())
    except OSError as e:
        # Readiness is a courtesy to the service manager: never a reason to stop syncing.
        log.warning("cannot notify the service manager", extra={"kv": {"error": str(e)}})
        return False
    return True
