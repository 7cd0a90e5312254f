"""Fairness between users of one lane: a user's queue messages beyond a budget wait in the
archive, not in JetStream — expand only, beside release 0.1.0.

``jobs.queue_held_by uuid NULL`` names the outbox row whose queue message the relay held back
instead of publishing, because the job's user already had ``ASSAY_QUEUED_PER_USER`` jobs
QUEUED in the stream (``archive_svc.relay``). The relay releases held jobs in turn, each
user's oldest first, as that user's queued jobs start: a release clears the column and writes
a new queue message to the outbox in one transaction, so a crash never loses or doubles one.
NULL (every existing job, every job 0.1.0 writes) is "not held". A roll back to 0.1.0 leaves
held jobs without a message in the stream; 0.1.0's sweep re-publishes them as lost queued jobs
after ``max_queued`` (and the downgrade, which drops the column, leaves them to it the same way).

No index names the column: a user's jobs in the stream and held ones are found through the
user's jobs in flight (``ix_jobs_inflight_user``), so holding a job is a HOT update. (Partial
indexes on it filled with the entries of held jobs' earlier versions, which every count
walked: 100 ms a page behind a 2,000-job bulk on the bench.)

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07 09:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("queue_held_by", sa.UUID(), nullable=True))


def downgrade() -> None:
    op.drop_column("jobs", "queue_held_by")
