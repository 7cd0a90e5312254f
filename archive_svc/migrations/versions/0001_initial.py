"""Initial schema: jobs, results, token ledger, outbox, idempotency keys.

Revision ID: 0001
Revises:
Create Date: 2026-11-28 12:56:05.091072
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

OUTBOX_NOTIFY_FUNCTION = """
CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('assay_outbox', '');
    RETURN NULL;
END
$$
"""


def upgrade() -> None:
    op.create_table(
        "idempotency_keys",
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("request_id", sa.Text(), nullable=False),
        sa.Column("payload_hash", sa.Text(), nullable=False),
        sa.Column("job_id", sa.UUID(), nullable=True),
        sa.Column("response", sa.LargeBinary(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("user_id", "request_id", name=op.f("pk_idempotency_keys")),
    )
    op.create_table(
        "jobs",
        sa.Column("job_id", sa.UUID(), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("result_id", sa.UUID(), nullable=True),
        sa.Column("assessment_name", sa.Text(), nullable=False),
        sa.Column(
            "status",
            sa.Enum("QUEUED", "PROCESSING", "COMPLETED", "FAILED", "CANCELLED", name="job_status"),
            nullable=False,
        ),
        sa.Column("attempt", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("worker_id", sa.Text(), nullable=True),
        sa.Column("version", sa.BigInteger(), server_default=sa.text("1"), nullable=False),
        sa.Column(
            "cancel_requested", sa.Boolean(), server_default=sa.text("false"), nullable=False
        ),
        sa.Column("error_code", sa.Text(), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("charge_count", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column("token_cost", sa.BigInteger(), nullable=False),
        sa.Column("request_id", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("processing_time_ms", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("job_id", name=op.f("pk_jobs")),
    )
    op.create_index(
        op.f("ix_jobs_created_at_job_id"), "jobs", ["created_at", "job_id"], unique=False
    )
    op.create_index(
        "ix_jobs_inflight_user",
        "jobs",
        ["user_id"],
        unique=False,
        postgresql_where=sa.text("status IN ('QUEUED', 'PROCESSING')"),
    )
    op.create_index(
        "ix_jobs_processing_heartbeat",
        "jobs",
        ["heartbeat_at"],
        unique=False,
        postgresql_where=sa.text("status = 'PROCESSING'"),
    )
    op.create_index(
        op.f("ix_jobs_user_id_created_at_job_id"),
        "jobs",
        ["user_id", "created_at", "job_id"],
        unique=False,
    )
    op.create_table(
        "outbox",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("seq", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("job_id", sa.UUID(), nullable=True),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox")),
    )
    op.create_index(op.f("ix_outbox_job_id"), "outbox", ["job_id"], unique=False)
    op.create_index(
        "ix_outbox_unsent",
        "outbox",
        ["seq"],
        unique=False,
        postgresql_where=sa.text("sent_at IS NULL"),
    )
    op.create_table(
        "results",
        sa.Column("result_id", sa.UUID(), nullable=False),
        sa.Column("job_id", sa.UUID(), nullable=True),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("assessment_name", sa.Text(), nullable=False),
        sa.Column("test_data", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "raw_responses",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("test_result", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("result_id", name=op.f("pk_results")),
    )
    op.create_index(op.f("ix_results_job_id"), "results", ["job_id"], unique=False)
    op.create_index(
        op.f("ix_results_user_id_created_at_result_id"),
        "results",
        ["user_id", "created_at", "result_id"],
        unique=False,
    )
    op.create_table(
        "token_accounts",
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("balance", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("balance >= 0", name=op.f("ck_token_accounts_balance_not_negative")),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_token_accounts")),
    )
    op.create_table(
        "ledger_entries",
        sa.Column("entry_id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("kind", sa.Enum("GRANT", "DEBIT", "REFUND", name="ledger_kind"), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("job_id", sa.UUID(), nullable=True),
        sa.Column("charge_no", sa.Integer(), nullable=True),
        sa.Column("reason", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "(kind = 'GRANT' AND amount > 0 AND job_id IS NULL)"
            " OR (kind = 'DEBIT' AND amount < 0 AND job_id IS NOT NULL)"
            " OR (kind = 'REFUND' AND amount > 0 AND job_id IS NOT NULL)",
            name=op.f("ck_ledger_entries_amount_matches_kind"),
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["token_accounts.user_id"],
            name=op.f("fk_ledger_entries_user_id_token_accounts"),
        ),
        sa.PrimaryKeyConstraint("entry_id", name=op.f("pk_ledger_entries")),
        sa.UniqueConstraint(
            "job_id", "charge_no", "kind", name=op.f("uq_ledger_entries_job_id_charge_no_kind")
        ),
    )
    op.create_index(
        op.f("ix_ledger_entries_user_id_entry_id"),
        "ledger_entries",
        ["user_id", "entry_id"],
        unique=False,
    )
    # The relay LISTENs on this channel, so it publishes right after each commit.
    op.execute(OUTBOX_NOTIFY_FUNCTION)
    op.execute(
        "CREATE TRIGGER outbox_notify AFTER INSERT ON outbox"
        " FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER outbox_notify ON outbox")
    op.execute("DROP FUNCTION outbox_notify()")
    op.drop_index(op.f("ix_ledger_entries_user_id_entry_id"), table_name="ledger_entries")
    op.drop_table("ledger_entries")
    op.drop_table("token_accounts")
    op.drop_index(op.f("ix_results_user_id_created_at_result_id"), table_name="results")
    op.drop_index(op.f("ix_results_job_id"), table_name="results")
    op.drop_table("results")
    op.drop_index(
        "ix_outbox_unsent", table_name="outbox", postgresql_where=sa.text("sent_at IS NULL")
    )
    op.drop_index(op.f("ix_outbox_job_id"), table_name="outbox")
    op.drop_table("outbox")
    op.drop_index(op.f("ix_jobs_user_id_created_at_job_id"), table_name="jobs")
    op.drop_index(
        "ix_jobs_processing_heartbeat",
        table_name="jobs",
        postgresql_where=sa.text("status = 'PROCESSING'"),
    )
    op.drop_index(
        "ix_jobs_inflight_user",
        table_name="jobs",
        postgresql_where=sa.text("status IN ('QUEUED', 'PROCESSING')"),
    )
    op.drop_index(op.f("ix_jobs_created_at_job_id"), table_name="jobs")
    op.drop_table("jobs")
    op.drop_table("idempotency_keys")
    op.execute("DROP TYPE ledger_kind")
    op.execute("DROP TYPE job_status")
