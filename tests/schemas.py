"""Schemas of earlier crmsync releases, frozen, to test that upgrades keep old data."""

from __future__ import annotations

import sqlalchemy as sa

from router.database import Blob


def first_release_link_table(meta: sa.MetaData | None = None) -> sa.Table:
    """``crmsync_link`` as the first release created it."""
    return sa.Table(
        "crmsync_link",
        meta or sa.MetaData(),
        sa.Column("record_id", sa.String(36), primary_key=True),
        sa.Column("entity", sa.String(64), nullable=False),
        sa.Column("source_record_id", sa.String(255), nullable=True),
        sa.Column("clock", Blob, nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("fields", Blob, nullable=False),
        sa.Column("version", sa.String(64), nullable=True),
        sa.Column("deleted", sa.Boolean, nullable=False),
        sa.Column("published", sa.Boolean, nullable=False),
        sa.Column("pending_event", Blob, nullable=True),
        sa.UniqueConstraint("entity", "source_record_id", name="crmsync_link_source"),
    )
