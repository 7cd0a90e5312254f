"""Heartbeats update the job row in place (HOT): no index on heartbeat_at, and room in each page.

A heartbeat sets only ``heartbeat_at``, but that column was the key of the sweep's index of
PROCESSING jobs, so every heartbeat wrote a new row version on another page and an entry in
each of the row's five indexes (≈ 700 B of WAL, every ASSAY_HEARTBEAT_INTERVAL, for every job
in flight). The index of PROCESSING jobs is now keyed on ``started_at``, which a heartbeat
does not change: the sweep reads every PROCESSING job through it — as many as the workers run
at once — and sorts them by heartbeat. ``fillfactor = 90`` leaves room in each page for the new
version, which HOT needs.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03 08:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

PROCESSING = sa.text("status = 'PROCESSING'")


def upgrade() -> None:
    op.create_index("ix_jobs_processing", "jobs", ["started_at"], postgresql_where=PROCESSING)
    op.drop_index("ix_jobs_processing_heartbeat", table_name="jobs", postgresql_where=PROCESSING)
    op.execute("ALTER TABLE jobs SET (fillfactor = 90)")


def downgrade() -> None:
    op.execute("ALTER TABLE jobs RESET (fillfactor)")
    op.create_index(
        "ix_jobs_processing_heartbeat", "jobs", ["heartbeat_at"], postgresql_where=PROCESSING
    )
    op.drop_index("ix_jobs_processing", table_name="jobs", postgresql_where=PROCESSING)
