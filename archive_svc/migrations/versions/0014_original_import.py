"""The cut-over from the original system: a record of every job and balance imported from it.

``imported_jobs`` maps each original ``job_id`` (text, any string; primary key, so an import is
idempotent per original id) to the Assay job it became — the same UUID when the original id is
one, else ``uuid5`` of it (``assaylib.jobs.original_job_uuid``) — and keeps what Assay's jobs
have no column for: the original's status, priority and retry count. ``imported_balances``
keeps, per user, the original balance last imported, so a later pass (``--since``) writes only
the difference.

A later pass may find a balance lower than the one imported first (the user spent tokens in
the original between the passes): its correction is a GRANT entry with a negative amount (the
opening entry and its corrections are GRANTs, never tied to a job), so the check on the
ledger's kinds allows a GRANT of any non-zero amount. Expand only: 0.1.0 writes only positive
GRANTs, and reads no new column.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07 06:00:00
"""

from __future__ import annotations

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

KINDS = "ck_ledger_entries_amount_matches_kind"
NARROW = (
    "(kind = 'GRANT' AND amount > 0 AND job_id IS NULL)"
    " OR (kind = 'DEBIT' AND amount < 0 AND job_id IS NOT NULL)"
    " OR (kind = 'REFUND' AND amount > 0 AND job_id IS NOT NULL)"
)
WIDE = NARROW.replace("kind = 'GRANT' AND amount > 0", "kind = 'GRANT' AND amount <> 0")


def upgrade() -> None:
    op.execute(
        "CREATE TABLE imported_jobs ("
        " original_job_id text CONSTRAINT pk_imported_jobs PRIMARY KEY,"
        " job_id uuid NOT NULL CONSTRAINT uq_imported_jobs_job_id UNIQUE,"
        " result_id uuid,"
        " user_id text NOT NULL,"
        " original_status text NOT NULL,"
        " original_priority integer NOT NULL DEFAULT 0,"
        " original_retry_count integer NOT NULL DEFAULT 0,"
        " in_flight text,"
        " imported_at timestamptz NOT NULL DEFAULT now())"
    )
    op.execute("CREATE UNIQUE INDEX ix_imported_jobs_result_id ON imported_jobs (result_id)")
    op.execute(
        "CREATE TABLE imported_balances ("
        " user_id text CONSTRAINT pk_imported_balances PRIMARY KEY,"
        " original_balance bigint NOT NULL,"
        " imported_at timestamptz NOT NULL DEFAULT now(),"
        " updated_at timestamptz NOT NULL DEFAULT now())"
    )
    op.execute(f"ALTER TABLE ledger_entries DROP CONSTRAINT {KINDS}")
    op.execute(f"ALTER TABLE ledger_entries ADD CONSTRAINT {KINDS} CHECK ({WIDE}) NOT VALID")
    op.execute(f"ALTER TABLE ledger_entries VALIDATE CONSTRAINT {KINDS}")


def downgrade() -> None:
    # A negative GRANT written by an import stays; the narrow check holds for new rows only.
    op.execute(f"ALTER TABLE ledger_entries DROP CONSTRAINT {KINDS}")
    op.execute(f"ALTER TABLE ledger_entries ADD CONSTRAINT {KINDS} CHECK ({NARROW}) NOT VALID")
    op.execute("DROP TABLE imported_balances")
    op.execute("DROP TABLE imported_jobs")
