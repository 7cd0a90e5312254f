"""Profiles in Bahasa Indonesia or English: the job keeps the locale its profile is written
in, and the queue message carries it.

``assay_create_submission`` gains a ``p_locale`` parameter as an overload: the 12-parameter
form of migration 0005 stays, so archives of the previous release keep working while a rolling
upgrade replaces them (their jobs have no locale, and their workers write in the default).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 00:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from archive_svc.migrations import earlier

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def _with_locale(function: str) -> str:
    """Migration 0005's function with the locale parameter, stored on the job."""
    changes = (
        ("p_queue bytea, p_trace text\n)", "p_queue bytea, p_trace text, p_locale text\n)"),
        (
            " request_id,\n                      trace_context)\n    VALUES (p_job, p_user,"
            " p_result, p_name, 'QUEUED', p_cost, p_request, p_trace)",
            " request_id,\n                      trace_context, locale)\n    VALUES (p_job, p_user,"
            " p_result, p_name, 'QUEUED', p_cost, p_request, p_trace, p_locale)",
        ),
    )
    for old, new in changes:
        assert function.count(old) == 1, f"migration 0005 no longer holds {old!r}"
        function = function.replace(old, new)
    return function


def _migration_0005_function() -> str:
    migration = earlier.load("0005_job_traces.py")
    return str(migration._with_trace(migration._migration_0003_function()))


def upgrade() -> None:
    op.add_column("jobs", sa.Column("locale", sa.Text(), nullable=True))
    op.execute(_with_locale(_migration_0005_function()))


def downgrade() -> None:
    op.execute(
        "DROP FUNCTION assay_create_submission(text, uuid, uuid, text, bigint, text, text,"
        " integer, jsonb, jsonb, bytea, text, text)"
    )
    op.drop_column("jobs", "locale")
