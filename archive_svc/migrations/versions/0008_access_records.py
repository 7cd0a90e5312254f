"""The access record: every read of a user's data by someone else (an operator, an internal
caller), pruned by ASSAY_ACCESS_RECORD_RETENTION in a pass of the sweep.

Keyset order is ``record_id`` (an identity, so insertion order): listing all and pruning the
oldest walk the primary key; listing one user's walks ``(user_id, record_id)``. No index on
``read_at``: the oldest rows are the first ones of the primary key, so pruning stops early.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 03:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "access_records",
        sa.Column("record_id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column(
            "read_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("reader", sa.Text(), nullable=False),
        sa.Column("reader_identity", sa.Text(), nullable=False),
        sa.Column("via", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.Column("rpc", sa.Text(), nullable=False),
        sa.Column("job_id", sa.UUID(), nullable=True),
        sa.Column("result_id", sa.UUID(), nullable=True),
        sa.PrimaryKeyConstraint("record_id", name=op.f("pk_access_records")),
    )
    op.create_index(
        op.f("ix_access_records_user_id_record_id"), "access_records", ["user_id", "record_id"]
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_access_records_user_id_record_id"), table_name="access_records")
    op.drop_table("access_records")
