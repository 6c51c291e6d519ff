"""Bounded tracebacks for message headers (``x-crmsync-traceback``).

The same bound and shape as a dead-lettered write's (adapters/failures.py): the last
frames, then the one-line error, never more than ``topology.TRACEBACK_LIMIT``
characters. The header travels with the refused message; logs get ids and the error's
type only, because an exception's text may quote customer values.
"""

from __future__ import annotations

import traceback

from router import topology

ERROR_LIMIT = 500  # characters of the one-line error


def one_line(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}".replace("\n", " ")[:ERROR_LIMIT]


def bounded(err: BaseException) -> str:
    line = one_line(err)
    # The frames say where; a huge message must not push them out of the bound.
    frames = "".join(traceback.format_tb(err.__traceback__))
    budget = topology.TRACEBACK_LIMIT - len(line) - 40
    tb = "Traceback (most recent call last):\n" + frames[-budget:] + line
    return tb[: topology.TRACEBACK_LIMIT]
