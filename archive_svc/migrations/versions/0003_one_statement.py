"""One statement per transition: events as outbox columns, and the debiting transitions as
functions.

Events are written as typed outbox columns by the statement that applies a transition (the
relay encodes the JobEvent when it publishes), so a transition, its ledger movement and its
outbox rows are one statement. Queue messages without a payload (a retry, a re-publication)
are built by the relay from the result row. The two transitions that debit (CREATE, RETRY)
lock the user's account before anything else and then count the user's in-flight jobs with a
fresh snapshot, so they run as PL/pgSQL functions: still one round trip.

An idempotency key now records the first reply's facts (job, cost, balance after), from which
a replay rebuilds it; keys written before this migration keep their stored reply.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 03:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

JOB_COLUMNS = (
    "job_id uuid, user_id text, result_id uuid, assessment_name text, status job_status,"
    " attempt integer, worker_id text, version bigint, cancel_requested boolean,"
    " error_code text, error_message text, charge_count integer, token_cost bigint,"
    " request_id text, created_at timestamptz, updated_at timestamptz,"
    " started_at timestamptz, heartbeat_at timestamptz, finished_at timestamptz,"
    " processing_time_ms bigint, requeues integer"
)
JOB_VALUES = (
    "j.job_id, j.user_id, j.result_id, j.assessment_name, j.status, j.attempt, j.worker_id,"
    " j.version, j.cancel_requested, j.error_code, j.error_message, j.charge_count,"
    " j.token_cost, j.request_id, j.created_at, j.updated_at, j.started_at, j.heartbeat_at,"
    " j.finished_at, j.processing_time_ms, j.requeues"
)
NO_JOB = ", ".join(f"NULL::{column.split()[1]}" for column in JOB_COLUMNS.split(","))

CREATE_SUBMISSION = f"""
CREATE FUNCTION assay_create_submission(
    p_user text, p_job uuid, p_result uuid, p_name text, p_cost bigint, p_request text,
    p_hash text, p_max_inflight integer, p_test_data jsonb, p_raw jsonb, p_queue bytea
) RETURNS TABLE (outcome text, balance bigint, first_cost bigint, first_response bytea,
                 {JOB_COLUMNS})
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_balance bigint;
    v_key idempotency_keys%ROWTYPE;
    j jobs%ROWTYPE;
BEGIN
    -- A repeat of a committed first request replays it (and charges nothing).
    IF p_request IS NOT NULL THEN
        SELECT * INTO v_key FROM idempotency_keys k
        WHERE k.user_id = p_user AND k.request_id = p_request;
        IF FOUND THEN
            SELECT * INTO j FROM jobs WHERE job_id = v_key.job_id;
            RETURN QUERY SELECT CASE WHEN v_key.payload_hash = p_hash THEN 'replayed'
                ELSE 'reused' END, v_key.balance_after, v_key.token_cost, v_key.response,
                {JOB_VALUES};
            RETURN;
        END IF;
    END IF;
    -- The account row lock serialises this user's debits (and their in-flight count).
    SELECT a.balance INTO v_balance FROM token_accounts a WHERE a.user_id = p_user FOR UPDATE;
    IF p_request IS NOT NULL THEN
        -- A first request with this key may have committed while this one waited.
        SELECT * INTO v_key FROM idempotency_keys k
        WHERE k.user_id = p_user AND k.request_id = p_request;
        IF FOUND THEN
            SELECT * INTO j FROM jobs WHERE job_id = v_key.job_id;
            RETURN QUERY SELECT CASE WHEN v_key.payload_hash = p_hash THEN 'replayed'
                ELSE 'reused' END, v_key.balance_after, v_key.token_cost, v_key.response,
                {JOB_VALUES};
            RETURN;
        END IF;
    END IF;
    IF v_balance IS NULL OR v_balance < p_cost THEN
        RETURN QUERY SELECT 'insufficient', coalesce(v_balance, 0), NULL::bigint, NULL::bytea,
            {NO_JOB};
        RETURN;
    END IF;
    IF p_max_inflight > 0 AND (SELECT count(*) FROM jobs WHERE user_id = p_user
            AND status IN ('QUEUED', 'PROCESSING')) >= p_max_inflight THEN
        RETURN QUERY SELECT 'rate_limited', v_balance, NULL::bigint, NULL::bytea, {NO_JOB};
        RETURN;
    END IF;
    UPDATE token_accounts SET balance = balance - p_cost, updated_at = now()
    WHERE user_id = p_user RETURNING balance INTO v_balance;
    INSERT INTO ledger_entries (user_id, kind, amount, job_id, charge_no, reason)
    VALUES (p_user, 'DEBIT', -p_cost, p_job, 1, 'analysis');
    INSERT INTO jobs (job_id, user_id, result_id, assessment_name, status, token_cost, request_id)
    VALUES (p_job, p_user, p_result, p_name, 'QUEUED', p_cost, p_request)
    RETURNING * INTO j;
    INSERT INTO results (result_id, job_id, user_id, assessment_name, test_data, raw_responses)
    VALUES (p_result, p_job, p_user, p_name, p_test_data, p_raw);
    INSERT INTO outbox (id, kind, job_id, user_id, result_id, assessment_name, charge_count,
                        occurred_at, payload)
    VALUES (gen_random_uuid(), 'job', p_job, p_user, p_result, p_name, 1, j.updated_at,
            p_queue);
    INSERT INTO outbox (id, kind, job_id, event_type, user_id, result_id, status, job_version,
                        attempt, assessment_name, charge_count, occurred_at)
    VALUES (gen_random_uuid(), 'event', p_job, 'analysis.queued', p_user, p_result, j.status,
            j.version, j.attempt, p_name, 1, j.updated_at);
    IF p_request IS NOT NULL THEN
        INSERT INTO idempotency_keys (user_id, request_id, payload_hash, job_id, token_cost,
                                      balance_after)
        VALUES (p_user, p_request, p_hash, p_job, p_cost, v_balance);
    END IF;
    RETURN QUERY SELECT 'created', v_balance, p_cost, NULL::bytea, {JOB_VALUES};
END
$$
"""

RETRY_JOB = f"""
CREATE FUNCTION assay_retry_job(
    p_job uuid, p_owner text, p_cost bigint, p_max_inflight integer
) RETURNS TABLE (outcome text, balance bigint, {JOB_COLUMNS})
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_balance bigint;
    j jobs%ROWTYPE;
BEGIN
    SELECT * INTO j FROM jobs WHERE job_id = p_job FOR UPDATE;
    IF NOT FOUND OR (p_owner <> '' AND j.user_id <> p_owner) THEN
        RETURN QUERY SELECT 'not_found', NULL::bigint, {NO_JOB};
        RETURN;
    END IF;
    IF j.status <> 'FAILED' THEN
        RETURN QUERY SELECT 'refused', NULL::bigint, {JOB_VALUES};
        RETURN;
    END IF;
    SELECT a.balance INTO v_balance FROM token_accounts a WHERE a.user_id = j.user_id FOR UPDATE;
    IF v_balance IS NULL OR v_balance < p_cost THEN
        RETURN QUERY SELECT 'insufficient', coalesce(v_balance, 0), {JOB_VALUES};
        RETURN;
    END IF;
    IF p_max_inflight > 0 AND (SELECT count(*) FROM jobs WHERE user_id = j.user_id
            AND status IN ('QUEUED', 'PROCESSING')) >= p_max_inflight THEN
        RETURN QUERY SELECT 'rate_limited', v_balance, {JOB_VALUES};
        RETURN;
    END IF;
    UPDATE jobs SET status = 'QUEUED', version = version + 1, updated_at = now(), attempt = 0,
        worker_id = NULL, error_code = NULL, error_message = NULL, cancel_requested = false,
        started_at = NULL, heartbeat_at = NULL, finished_at = NULL, processing_time_ms = NULL,
        requeues = 0, charge_count = charge_count + 1, token_cost = p_cost
    WHERE job_id = p_job RETURNING * INTO j;
    UPDATE token_accounts SET balance = balance - p_cost, updated_at = now()
    WHERE user_id = j.user_id RETURNING balance INTO v_balance;
    INSERT INTO ledger_entries (user_id, kind, amount, job_id, charge_no, reason)
    VALUES (j.user_id, 'DEBIT', -p_cost, p_job, j.charge_count, 'analysis');
    INSERT INTO outbox (id, kind, job_id, user_id, result_id, assessment_name, charge_count,
                        occurred_at)
    VALUES (gen_random_uuid(), 'job', p_job, j.user_id, j.result_id, j.assessment_name,
            j.charge_count, j.updated_at);
    INSERT INTO outbox (id, kind, job_id, event_type, user_id, result_id, status, job_version,
                        attempt, assessment_name, charge_count, occurred_at)
    VALUES (gen_random_uuid(), 'event', p_job, 'analysis.queued', j.user_id, j.result_id,
            j.status, j.version, j.attempt, j.assessment_name, j.charge_count, j.updated_at);
    RETURN QUERY SELECT 'retried', v_balance, {JOB_VALUES};
END
$$
"""

EVENT_COLUMNS = (
    ("event_type", sa.Text()),
    ("user_id", sa.Text()),
    ("result_id", sa.UUID()),
    ("status", postgresql.ENUM(name="job_status", create_type=False)),
    ("job_version", sa.BigInteger()),
    ("attempt", sa.Integer()),
    ("error_code", sa.Text()),
    ("error_message", sa.Text()),
    ("processing_time_ms", sa.BigInteger()),
    ("assessment_name", sa.Text()),
    ("charge_count", sa.Integer()),
    ("occurred_at", sa.DateTime(timezone=True)),
)


def upgrade() -> None:
    op.alter_column("outbox", "subject", existing_type=sa.Text(), nullable=True)
    op.alter_column("outbox", "payload", existing_type=sa.LargeBinary(), nullable=True)
    for name, kind in EVENT_COLUMNS:
        op.add_column("outbox", sa.Column(name, kind, nullable=True))
    op.add_column("idempotency_keys", sa.Column("token_cost", sa.BigInteger(), nullable=True))
    op.add_column("idempotency_keys", sa.Column("balance_after", sa.BigInteger(), nullable=True))
    op.execute(CREATE_SUBMISSION)
    op.execute(RETRY_JOB)


def downgrade() -> None:
    op.execute("DROP FUNCTION assay_retry_job(uuid, text, bigint, integer)")
    op.execute(
        "DROP FUNCTION assay_create_submission(text, uuid, uuid, text, bigint, text, text,"
        " integer, jsonb, jsonb, bytea)"
    )
    op.drop_column("idempotency_keys", "balance_after")
    op.drop_column("idempotency_keys", "token_cost")
    for name, _ in reversed(EVENT_COLUMNS):
        op.drop_column("outbox", name)
    op.execute("DELETE FROM outbox WHERE payload IS NULL OR subject IS NULL")
    op.alter_column("outbox", "payload", existing_type=sa.LargeBinary(), nullable=False)
    op.alter_column("outbox", "subject", existing_type=sa.Text(), nullable=False)
