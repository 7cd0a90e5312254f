"""Outbox rows written once: the relay's position is a snapshot cursor, not a mark per row.

Marking each published row (``sent_at``) rewrote every outbox row once more — a new row version
through its indexes, never HOT since ``sent_at`` was in the unsent index's predicate: ≈ 1.6 KB
of WAL per job. Now each row records the transaction that wrote it (``txid``), and the relay
keeps one row, ``outbox_cursor``, in the way PgQ batches events:

- ``done``: a snapshot; every row whose transaction is visible in it (committed before it was
  taken) is published;
- ``batch``: a later snapshot; the rows visible in it but not in ``done`` are the batch being
  published, in ``seq`` order, and those with ``seq <= batch_seq`` of it are out.

A transaction that commits after a snapshot is in a later batch whatever its xid, so a job's
events, whose transactions commit one after another (each waits for the job row's lock), are
published in commit order: across batches by the batch, within one by ``seq``, which each took
after the one before committed. ``outbox_published(txid, seq)`` says whether a row is out.
Published rows are deleted in bulk after ASSAY_EVENTS_MAX_AGE, as before.

Existing rows: published ones get txid 3 (older than any snapshot), unpublished ones this
migration's transaction id, and the cursor starts at this transaction's snapshot with this
transaction among those it does not see: a transaction running beside the migration (an
archive of the previous release) is in that snapshot's in-progress list, so what it writes
is relayed too.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 07:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

START = """
INSERT INTO outbox_cursor (done, batch)
SELECT s, s FROM (
    SELECT (least(pg_snapshot_xmin(c), x)::text || ':' || greatest(pg_snapshot_xmax(c), x)::text
        || ':' || coalesce((SELECT string_agg(v::text, ',' ORDER BY v) FROM (
            SELECT pg_snapshot_xip(c) AS v UNION SELECT x WHERE x < pg_snapshot_xmax(c)) AS xip
        ), ''))::pg_snapshot AS s
    FROM pg_current_snapshot() AS c, pg_current_xact_id() AS x
) AS here
"""
"""The cursor's first position: this transaction's snapshot, with this transaction among the
ones not yet visible in it (so the unpublished rows it marks with its own id are relayed)."""

PUBLISHED = """
CREATE FUNCTION outbox_published(txid xid8, seq bigint) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT pg_visible_in_snapshot(txid, c.done)
        OR (pg_visible_in_snapshot(txid, c.batch) AND seq <= c.batch_seq)
    FROM outbox_cursor c
$$
"""


def upgrade() -> None:
    op.execute("ALTER TABLE outbox ADD COLUMN txid xid8 NOT NULL DEFAULT pg_current_xact_id()")
    op.execute(
        "UPDATE outbox SET txid = CASE WHEN sent_at IS NULL THEN pg_current_xact_id()"
        " ELSE '3'::xid8 END"
    )
    op.execute(
        "CREATE TABLE outbox_cursor (one boolean DEFAULT true NOT NULL,"
        " done pg_snapshot NOT NULL, batch pg_snapshot NOT NULL,"
        " batch_seq bigint DEFAULT 0 NOT NULL,"
        " CONSTRAINT ck_outbox_cursor_one CHECK (one),"
        " CONSTRAINT pk_outbox_cursor PRIMARY KEY (one))"
    )
    op.execute(START)
    op.execute(PUBLISHED)
    op.drop_index(
        "ix_outbox_unsent", table_name="outbox", postgresql_where=sa.text("sent_at IS NULL")
    )
    op.drop_column("outbox", "sent_at")
    op.create_index(op.f("ix_outbox_txid"), "outbox", ["txid"])


def downgrade() -> None:
    op.add_column("outbox", sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE outbox SET sent_at = now() WHERE outbox_published(txid, seq)")
    op.drop_index(op.f("ix_outbox_txid"), table_name="outbox")
    op.execute("DROP FUNCTION outbox_published(xid8, bigint)")
    op.drop_table("outbox_cursor")
    op.drop_column("outbox", "txid")
    op.create_index(
        "ix_outbox_unsent", "outbox", ["seq"], postgresql_where=sa.text("sent_at IS NULL")
    )
