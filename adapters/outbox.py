"""The adapter outbox: a local change recorded as its link's pending version.

The encoded event, its id and routing key wait in the link (``crmsync_link``) until the
broker confirms the publish, written in the transaction that found the change, so a
crash can neither lose the change nor separate it from the link it moved.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.engine import Connection

from adapters import links
from adapters.capture import Publish
from router.events import encode, new_event_id
from router.logs import kv


@dataclass(frozen=True)
class Outbox:
    source: str  # the adapter's name
    actor: str  # its vector-clock actor
    log: logging.Logger

    def record(
        self,
        tx: Connection,
        entity: str,
        source_record_id: str,
        change: Publish,
        when: datetime,
        keep_id: bool = True,
    ) -> None:
        """Record ``change`` as the link's pending version (``keep_id`` false: the link
        lets go of the id, as after a journaled delete: a row under it is another record)."""
        record_id = change.record_id or str(uuid.uuid4())
        event = change.event(
            event_id=new_event_id(),
            record_id=record_id,
            source=self.source,
            actor=self.actor,
            entity=entity,
            source_record_id=source_record_id,
            occurred_at=when,
        )
        links.save(
            tx,
            links.Link(
                record_id=record_id,
                entity=entity,
                source_record_id=source_record_id if keep_id else None,
                clock=change.clock,
                content_hash=change.content_hash,
                fields=dict(change.content.fields),
                version=change.content.version,
                deleted=change.content.deleted,
                published=False,
                pending_event=encode(event),
                pending_event_id=event.event_id,
                pending_routing_key=event.routing_key,
                field_versions=change.field_versions,
            ),
        )
        self.log.debug(
            "local change",
            extra=kv(
                event_id=event.event_id, record_id=record_id, adapter=self.source, op=event.op
            ),
        )
