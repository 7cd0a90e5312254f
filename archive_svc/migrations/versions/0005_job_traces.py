"""One trace per job: the job keeps the trace context of its submission, and the relay
publishes each of the job's messages in that trace.

``assay_create_submission`` gains a ``p_trace`` parameter as an overload: the 11-parameter
form of migration 0003 stays, so archives of the previous release keep working while a
rolling upgrade replaces them (a later migration may drop it).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 06:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from archive_svc.migrations import earlier

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def _with_trace(function: str) -> str:
    """Migration 0003's function with the trace parameter, stored on the job."""
    changes = (
        ("p_queue bytea\n)", "p_queue bytea, p_trace text\n)"),
        (
            "INSERT INTO jobs (job_id, user_id, result_id, assessment_name, status, token_cost,"
            " request_id)\n    VALUES (p_job, p_user, p_result, p_name, 'QUEUED', p_cost,"
            " p_request)",
            "INSERT INTO jobs (job_id, user_id, result_id, assessment_name, status, token_cost,"
            " request_id,\n                      trace_context)\n    VALUES (p_job, p_user,"
            " p_result, p_name, 'QUEUED', p_cost, p_request, p_trace)",
        ),
    )
    for old, new in changes:
        assert function.count(old) == 1, f"migration 0003 no longer holds {old!r}"
        function = function.replace(old, new)
    return function


def _migration_0003_function() -> str:
    return str(earlier.load("0003_one_statement.py").CREATE_SUBMISSION)


def upgrade() -> None:
    op.add_column("jobs", sa.Column("trace_context", sa.Text(), nullable=True))
    op.execute(_with_trace(_migration_0003_function()))


def downgrade() -> None:
    op.execute(
        "DROP FUNCTION assay_create_submission(text, uuid, uuid, text, bigint, text, text,"
        " integer, jsonb, jsonb, bytea, text)"
    )
    op.drop_column("jobs", "trace_context")
