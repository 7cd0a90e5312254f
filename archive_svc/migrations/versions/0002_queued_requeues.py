"""Lost-queue recovery: how often the sweep re-published a QUEUED job.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 00:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "jobs",
        sa.Column("requeues", sa.Integer(), server_default=sa.text("0"), nullable=False),
    )
    # The sweep's queued-too-long pass: QUEUED jobs by the time they were (re)queued.
    op.create_index(
        "ix_jobs_queued_updated",
        "jobs",
        ["updated_at"],
        unique=False,
        postgresql_where=sa.text("status = 'QUEUED'"),
    )


def downgrade() -> None:
    op.drop_index(
        "ix_jobs_queued_updated", table_name="jobs", postgresql_where=sa.text("status = 'QUEUED'")
    )
    op.drop_column("jobs", "requeues")
