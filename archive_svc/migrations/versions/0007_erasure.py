"""Personal data: result rows remember when their content was erased, an erasure log records
who asked and how much was erased (never the data), and RetryJob refuses a job whose result
was erased (there is nothing left to analyse).

``assay_retry_job`` is replaced with the same signature: archives of the previous release call
it the same way, and learn the new ``erased`` outcome as a refusal they already map.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 03:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from archive_svc.migrations import earlier

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

RETAINED = sa.text("erased_at IS NULL")
REFUSED = (
    "    IF j.status <> 'FAILED' THEN\n"
    "        RETURN QUERY SELECT 'refused', NULL::bigint, {values};\n"
    "        RETURN;\n"
    "    END IF;\n"
)
ERASED = (
    "    IF EXISTS (SELECT 1 FROM results r WHERE r.result_id = j.result_id\n"
    "               AND r.erased_at IS NOT NULL) THEN\n"
    "        RETURN QUERY SELECT 'erased', NULL::bigint, {values};\n"
    "        RETURN;\n"
    "    END IF;\n"
)


def _retry_functions() -> tuple[str, str]:
    """Migration 0003's assay_retry_job as CREATE OR REPLACE, and the same refusing an erased
    job's retry (checked after the job row is locked, so an erasure that commits first wins)."""
    migration = earlier.load("0003_one_statement.py")
    old = str(migration.RETRY_JOB).replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)
    refused = REFUSED.format(values=migration.JOB_VALUES)
    assert old.count(refused) == 1, "migration 0003's assay_retry_job changed"
    new = old.replace(refused, refused + ERASED.format(values=migration.JOB_VALUES))
    return old, new


def upgrade() -> None:
    op.add_column("results", sa.Column("erased_at", sa.DateTime(timezone=True), nullable=True))
    # The retention's scan and `assay status`'s oldest retained result: kept rows by age.
    op.create_index("ix_results_retained", "results", ["created_at"], postgresql_where=RETAINED)
    op.create_table(
        "erasures",
        sa.Column("request_id", sa.Text(), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=True),
        sa.Column("trigger", sa.Text(), nullable=False),
        sa.Column("requested_by", sa.Text(), nullable=False),
        sa.Column(
            "requested_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("jobs_cancelled", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("results_erased", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column(
            "outbox_messages_erased", sa.Integer(), server_default=sa.text("0"), nullable=False
        ),
        sa.Column(
            "queue_messages_deleted", sa.Integer(), server_default=sa.text("0"), nullable=False
        ),
        sa.CheckConstraint(
            "trigger IN ('request', 'retention')", name=op.f("ck_erasures_trigger_known")
        ),
        sa.PrimaryKeyConstraint("request_id", name=op.f("pk_erasures")),
    )
    op.create_index(
        op.f("ix_erasures_user_id_requested_at"), "erasures", ["user_id", "requested_at"]
    )
    op.execute(_retry_functions()[1])


def downgrade() -> None:
    op.execute(_retry_functions()[0])
    op.drop_index(op.f("ix_erasures_user_id_requested_at"), table_name="erasures")
    op.drop_table("erasures")
    op.drop_index("ix_results_retained", table_name="results", postgresql_where=RETAINED)
    op.drop_column("results", "erased_at")
