"""The content hash every comparison of records relies on.

Adapters store it in their links (echo detection) and send it in digests; the router's
anti-entropy hashes its own record states with it. Both sides must agree byte for byte,
so there is exactly one definition, here, where the router can import it without
importing the adapters.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import msgpack

from router.events import Scalar


def content_hash(fields: Mapping[str, Scalar], deleted: bool) -> str:
    """Hash of the mapped content; the same content hashes the same whatever the key order."""
    packed = msgpack.packb([sorted(fields.items()), deleted], use_bin_type=True)
    return hashlib.sha256(packed).hexdigest()[:32]
