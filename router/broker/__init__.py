"""The broker seam: the only code that imports aio-pika, aiormq or pika.

* :mod:`.aio` — the asyncio client the daemons use (connect, declare, consume, publish);
* :mod:`.rpc` — request/reply with the router over ``crmsync.control``;
* :mod:`.dlq` — the blocking client (pika) of the short ``crmsync dlq`` commands;
* :mod:`.errors` — where the libraries' exceptions become crmsync's;
* :mod:`.memory` — an in-memory stand-in with the same shape, for unit tests;
* :mod:`.base` — the protocols the daemons are written against.

Nothing in the pure core or the state store imports this package: messages cross it
as :class:`~router.messages.Outgoing` and :class:`~router.messages.Delivery` values.
"""
