"""Priority lanes: a job's priority, the tiers operators set, and a create function that
records the priority — expand only, beside release 0.1.0.

``jobs.priority smallint NOT NULL DEFAULT 0`` is the job's lane (``assaylib.tiers``): 0 is
the default tier's, so every existing job and every job 0.1.0's archive writes (its 13-argument
``assay_create_submission``, kept unchanged) is a default-lane job, published to the subject
0.1.0 publishes to. A constant default adds the column without rewriting the table. The cut-over
(``assay import original``) can carry the original system's ``priority`` column into it.

``user_tiers`` holds the tier an operator set for a user whose identity provider names none
(``SetUserTier``, ``assay users tier``); the archive reads it when the submitting token has no
tier claim.

``assay_create_submission`` gains a 14-argument form: migration 0012's with ``p_priority``,
stored on the job. The 13-argument form stays for 0.1.0's archive.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07 06:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from archive_svc.migrations import earlier

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

PRIORITY_FORM = (
    "text, uuid, uuid, text, bigint, text, text, integer, bytea, bytea, bytea, text, text, smallint"
)


def create_submission() -> str:
    """Migration 0012's function with the priority parameter, stored on the job."""
    function = str(earlier.load("0012_input_storage.py").create_submission())
    changes = (
        ("p_trace text, p_locale text\n)", "p_trace text, p_locale text, p_priority smallint\n)"),
        (
            " request_id,\n                      trace_context, locale)\n    VALUES (p_job, p_user,"
            " p_result, p_name, 'QUEUED', p_cost, p_request, p_trace, p_locale)",
            " request_id,\n                      trace_context, locale, priority)\n    VALUES"
            " (p_job, p_user, p_result, p_name, 'QUEUED', p_cost, p_request, p_trace, p_locale,"
            " p_priority)",
        ),
    )
    for old, new in changes:
        assert function.count(old) == 1, f"migration 0012 no longer holds {old!r}"
        function = function.replace(old, new)
    return function


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
    op.execute(create_submission())


def downgrade() -> None:
    op.execute(f"DROP FUNCTION assay_create_submission({PRIORITY_FORM})")
    op.drop_table("user_tiers")
    op.drop_column("jobs", "priority")
