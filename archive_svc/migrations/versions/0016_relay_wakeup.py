"""The outbox trigger notifies only sessions that have not said they wake the relay themselves.

``NOTIFY`` serializes every notifying transaction's commit: PostgreSQL takes one lock for
the whole database's notification queue before it commits and holds it until the commit is
flushed, so two transactions that insert outbox rows commit one after the other, each waiting
for the other's WAL flush (``Lock``/``object`` in ``pg_stat_activity``). At 150 submissions a
second those waits were most of the archive's create time (bench/RESULTS.md, issue 30).

The archive's sessions set ``assay.outbox_notify = off`` (``archive_svc.db``) and wake the
relay after their commit instead (``archive_svc.relay.RelayWake``): in process when their
replica holds the relay's lock, else with a ``pg_notify`` of its own transaction, which
writes nothing and so holds that lock for no flush. Every other session — the previous
release's archive during a rolling upgrade, an operator's ``psql`` — notifies at commit as
before, so a relay of either release hears every write.

The downgrade restores migration 0001's function.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07 09:00:00
"""

from __future__ import annotations

from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

NOTIFY_UNLESS_OFF = """
CREATE OR REPLACE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF coalesce(current_setting('assay.outbox_notify', true), '') <> 'off' THEN
        PERFORM pg_notify('assay_outbox', '');
    END IF;
    RETURN NULL;
END
$$
"""

ALWAYS_NOTIFY = """
CREATE OR REPLACE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('assay_outbox', '');
    RETURN NULL;
END
$$
"""


def upgrade() -> None:
    op.execute(NOTIFY_UNLESS_OFF)


def downgrade() -> None:
    op.execute(ALWAYS_NOTIFY)
