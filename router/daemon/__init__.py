"""The router daemon: a thin shell around the pure rules of :mod:`router.decide`.

* :mod:`.service` — lifecycle and the batch loop (consume, commit, publish, ack);
* :mod:`.pipeline` — one batch over plain values: judge, decide, what to store and send;
* :mod:`.control_server` — typed requests on ``crmsync.control``, a dispatch table;
* :mod:`.operations` — what the requests do: register, edit, resolve, remove, status;
* :mod:`.context` — what these share (config, store, registry, counters).
"""

from router.daemon.service import Router, run_router

__all__ = ["Router", "run_router"]
