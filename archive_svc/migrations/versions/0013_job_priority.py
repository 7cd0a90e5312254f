"""Priority lanes: a job's priority and the tiers operators set — expand only, beside
release 0.1.0.

``jobs.priority smallint NOT NULL DEFAULT 0`` is the job's lane (``assaylib.tiers``): 0 is
the default tier's, so every existing job and every job 0.1.0's archive writes (its 13-argument
``assay_create_submission``, kept unchanged) is a default-lane job, published to the subject
0.1.0 publishes to. A constant default adds the column without rewriting the table. The cut-over
(``assay import original``) can carry the original system's ``priority`` column into it.

``user_tiers`` holds the tier an operator set for a user whose identity provider names none
(``SetUserTier``, ``assay users tier``); the archive reads it when the submitting token has no
tier claim.

The set-based create (migration 0015) records each job's priority; 0.1.0's 13-argument
``assay_create_submission`` stays as it is.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07 06:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "jobs",
        sa.Column("priority", sa.SmallInteger(), server_default=sa.text("0"), nullable=False),
    )
    op.create_table(
        "user_tiers",
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("tier", sa.Text(), nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_user_tiers")),
    )


def downgrade() -> None:
    op.drop_table("user_tiers")
    op.drop_column("jobs", "priority")
