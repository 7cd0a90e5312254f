"""What `assay status` reads: the sweeps' summaries, and jobs by the time they ended.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 05:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

FINISHED = sa.text("finished_at IS NOT NULL")


def upgrade() -> None:
    op.create_table(
        "sweeps",
        sa.Column("sweep_id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column(
            "ran_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column("found", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("requeued", sa.Integer(), nullable=False),
        sa.Column("held_back", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.Column("in_flight", sa.BigInteger(), nullable=False),
        sa.Column("queued", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("sweep_id", name=op.f("pk_sweeps")),
    )
    # Last minute's throughput and the workers seen lately: jobs by when they ended.
    op.create_index("ix_jobs_finished", "jobs", ["finished_at"], postgresql_where=FINISHED)


def downgrade() -> None:
    op.drop_index("ix_jobs_finished", table_name="jobs", postgresql_where=FINISHED)
    op.drop_table("sweeps")
