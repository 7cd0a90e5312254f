"""A batch of submissions created set-based: ``assay_create_submissions`` over arrays, one
statement per table for the whole batch instead of a PL/pgSQL function of about ten statements
per submission (migrations 0003, 0005, 0006, 0012) called once per item.

The function runs two statements. The first locks the accounts of every user in the batch, in
code-point order (``COLLATE "C"``: the archive sorts its batch by user the same way, as the
previous release's archive locks them one at a time), so batches that share users queue
rather than deadlock. The second does the rest, with a snapshot taken after the locks, so it
sees what the transactions that held them committed (a first request with the same key, the
jobs they put in flight), as the per-item function did by re-reading after its lock:

- ``item``: the batch in the archive's order, without the submissions whose deadline has
  passed (they write nothing and have no row), with the idempotency key each one repeats;
- ``fold``: each user's submissions in order (a recursive CTE, one step per submission of a
  user, all users at once), carrying the balance left, the jobs in flight and the request ids
  created so far: a known key replays (or is ``reused`` with another payload), a request id
  created earlier in the batch replays that one, then ``insufficient``, ``rate_limited`` or
  ``created`` — the outcomes and the order of checks of the per-item function;
- one UPDATE of the accounts and one INSERT per table (ledger, jobs, results, outbox, keys)
  for the created submissions, in batch order, so the outbox trigger (FOR EACH STATEMENT)
  notifies the relay once per batch instead of twice per submission.

The statement's plan does not depend on the batch, so the function keeps one generic plan
(``plan_cache_mode``) instead of planning it for each call: ≈ 0.1–1 ms of the backend's CPU
per batch on the bench's machine (bench/RESULTS.md).

A column per submission is added in three places: ``ITEMS`` (a parameter, an array), the
insert that stores it, and, when the reply should carry it, ``JOB_COLUMNS``.

``assay_create_submission`` (13 arguments, migration 0012) and the outbox trigger stay as they
are: the previous release's archive calls it per item during a rolling upgrade, and its outbox
rows still wake the relay. The downgrade drops the new function.

Each job records its priority (migration 0013): its tier's in the map the archive passes
(``p_tier_names``/``p_tier_priorities``, from ``ASSAY_TIERS``), the tier being the token's
(``p_tier``) or else the user's in ``user_tiers``; 0 for none or an unknown one.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07 06:00:00
"""

from __future__ import annotations

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

ITEMS = (
    ("user_id", "text"),
    ("job_id", "uuid"),
    ("result_id", "uuid"),
    ("assessment_name", "text"),
    ("cost", "bigint"),
    ("request_id", "text"),
    ("payload_hash", "text"),
    ("max_inflight", "integer"),
    ("test_data", "bytea"),
    ("raw_responses", "bytea"),
    ("trace_context", "text"),
    ("locale", "text"),
    ("deadline", "timestamptz"),
    ("tier", "text"),
)
"""A submission's fields, each a parameter ``p_<name> <type>[]``, in the archive's order."""

JOB_COLUMNS = (
    ("job_id", "uuid"),
    ("user_id", "text"),
    ("result_id", "uuid"),
    ("assessment_name", "text"),
    ("status", "job_status"),
    ("attempt", "integer"),
    ("worker_id", "text"),
    ("version", "bigint"),
    ("cancel_requested", "boolean"),
    ("error_code", "text"),
    ("error_message", "text"),
    ("charge_count", "integer"),
    ("token_cost", "bigint"),
    ("request_id", "text"),
    ("created_at", "timestamptz"),
    ("updated_at", "timestamptz"),
    ("started_at", "timestamptz"),
    ("heartbeat_at", "timestamptz"),
    ("finished_at", "timestamptz"),
    ("processing_time_ms", "bigint"),
    ("requeues", "integer"),
    ("priority", "smallint"),
)
"""The job row each reply carries (the created job, or the one a repeat replays)."""

TIER_MAP = (("tier_names", "text"), ("tier_priorities", "smallint"))
"""The tiers' priorities, two arrays after the items'."""

PARAMETERS = ", ".join(f"p_{name} {kind}[]" for name, kind in ITEMS + TIER_MAP)
SIGNATURE = ", ".join(f"{kind}[]" for _, kind in ITEMS + TIER_MAP)

CREATE_SUBMISSIONS = f"""
CREATE FUNCTION assay_create_submissions({PARAMETERS})
RETURNS TABLE (n bigint, outcome text, balance bigint, first_cost bigint, first_response bytea,
               {", ".join(f"{name} {kind}" for name, kind in JOB_COLUMNS)})
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
#variable_conflict use_column
BEGIN
    PERFORM FROM token_accounts a WHERE a.user_id = ANY (p_user_id)
    ORDER BY a.user_id COLLATE "C" FOR UPDATE;
    RETURN QUERY WITH RECURSIVE
    item AS MATERIALIZED (
        SELECT s.*, row_number() OVER (PARTITION BY s.user_id ORDER BY s.n) AS r,
            k.payload_hash AS key_hash, k.job_id AS key_job, k.token_cost AS key_cost,
            k.response AS key_response, k.balance_after AS key_balance,
            coalesce((SELECT t.priority FROM unnest(p_tier_names, p_tier_priorities)
                AS t(tier, priority) WHERE t.tier = coalesce(s.tier, (SELECT u.tier
                FROM user_tiers u WHERE u.user_id = s.user_id))), 0)::smallint AS priority
        FROM unnest({", ".join(f"p_{name}" for name, _ in ITEMS)}) WITH ORDINALITY
            AS s({", ".join(name for name, _ in ITEMS)}, n)
        LEFT JOIN idempotency_keys k ON k.user_id = s.user_id AND k.request_id = s.request_id
        WHERE s.deadline IS NULL OR clock_timestamp() < s.deadline
    ),
    fold (user_id, r, balance, inflight, requests, n, verdict, balance_after) AS (
        SELECT u.user_id, 0::bigint, a.balance,
            CASE WHEN u.limited THEN (SELECT count(*) FROM jobs j WHERE j.user_id = u.user_id
                AND j.status IN ('QUEUED', 'PROCESSING')) ELSE 0 END,
            '{{}}'::text[], NULL::bigint, NULL::text, NULL::bigint
        FROM (SELECT i.user_id, bool_or(i.max_inflight > 0) AS limited FROM item i
              GROUP BY i.user_id) u
        LEFT JOIN token_accounts a ON a.user_id = u.user_id
        UNION ALL
        SELECT f.user_id, i.r,
            CASE WHEN v.verdict = 'created' THEN f.balance - i.cost ELSE f.balance END,
            f.inflight + CASE WHEN v.verdict = 'created' THEN 1 ELSE 0 END,
            CASE WHEN v.verdict = 'created' AND i.request_id IS NOT NULL
                THEN f.requests || i.request_id ELSE f.requests END,
            i.n, v.verdict,
            CASE WHEN v.verdict = 'created' THEN f.balance - i.cost
                ELSE coalesce(f.balance, 0) END
        FROM fold f JOIN item i ON i.user_id = f.user_id AND i.r = f.r + 1,
        LATERAL (SELECT CASE
            WHEN i.key_hash IS NOT NULL THEN 'key'
            WHEN i.request_id = ANY (f.requests) THEN 'repeat'
            WHEN f.balance IS NULL OR f.balance < i.cost THEN 'insufficient'
            WHEN i.max_inflight > 0 AND f.inflight >= i.max_inflight THEN 'rate_limited'
            ELSE 'created' END AS verdict) v
    ),
    made AS MATERIALIZED (
        SELECT i.*, f.balance_after FROM fold f JOIN item i ON i.n = f.n
        WHERE f.verdict = 'created'
    ),
    debit AS (
        UPDATE token_accounts a SET balance = a.balance - d.cost, updated_at = now()
        FROM (SELECT m.user_id, sum(m.cost) AS cost FROM made m GROUP BY m.user_id) d
        WHERE a.user_id = d.user_id
    ),
    ledger AS (
        INSERT INTO ledger_entries (user_id, kind, amount, job_id, charge_no, reason)
        SELECT m.user_id, 'DEBIT', -m.cost, m.job_id, 1, 'analysis' FROM made m ORDER BY m.n
    ),
    job AS (
        INSERT INTO jobs (job_id, user_id, result_id, assessment_name, status, token_cost,
                          request_id, trace_context, locale, priority)
        SELECT m.job_id, m.user_id, m.result_id, m.assessment_name, 'QUEUED', m.cost,
            m.request_id, m.trace_context, m.locale, m.priority
        FROM made m ORDER BY m.n
        RETURNING *
    ),
    result AS (
        INSERT INTO results (result_id, job_id, user_id, assessment_name, test_data,
                             raw_responses)
        SELECT m.result_id, m.job_id, m.user_id, m.assessment_name, m.test_data,
            m.raw_responses
        FROM made m ORDER BY m.n
    ),
    message AS (
        INSERT INTO outbox (id, kind, job_id, event_type, user_id, result_id, status,
                            job_version, attempt, assessment_name, charge_count, occurred_at)
        SELECT gen_random_uuid(), e.kind, j.job_id, e.event_type, j.user_id, j.result_id,
            e.status, e.job_version, e.attempt, j.assessment_name, 1, j.updated_at
        FROM made m JOIN job j ON j.job_id = m.job_id,
        LATERAL (VALUES (1, 'job', NULL, NULL::job_status, NULL::bigint, NULL::integer),
                        (2, 'event', 'analysis.queued', j.status, j.version, j.attempt))
            AS e(o, kind, event_type, status, job_version, attempt)
        ORDER BY m.n, e.o
    ),
    keyed AS (
        INSERT INTO idempotency_keys (user_id, request_id, payload_hash, job_id, token_cost,
                                      balance_after)
        SELECT m.user_id, m.request_id, m.payload_hash, m.job_id, m.cost, m.balance_after
        FROM made m WHERE m.request_id IS NOT NULL
    )
    SELECT f.n,
        CASE f.verdict
            WHEN 'key' THEN CASE WHEN i.key_hash = i.payload_hash THEN 'replayed'
                ELSE 'reused' END
            WHEN 'repeat' THEN CASE WHEN earlier.payload_hash = i.payload_hash THEN 'replayed'
                ELSE 'reused' END
            ELSE f.verdict END,
        CASE f.verdict WHEN 'key' THEN i.key_balance WHEN 'repeat' THEN earlier.balance_after
            ELSE f.balance_after END,
        CASE f.verdict WHEN 'key' THEN i.key_cost WHEN 'repeat' THEN earlier.cost
            WHEN 'created' THEN i.cost END,
        CASE WHEN f.verdict = 'key' THEN i.key_response END,
        {", ".join(f"jr.{name}" for name, _ in JOB_COLUMNS)}
    FROM fold f JOIN item i ON i.n = f.n
    LEFT JOIN made earlier ON f.verdict = 'repeat' AND earlier.user_id = i.user_id
        AND earlier.request_id = i.request_id
    LEFT JOIN LATERAL (
        SELECT j.* FROM job j WHERE j.job_id = CASE f.verdict WHEN 'created' THEN i.job_id
            WHEN 'repeat' THEN earlier.job_id END
        UNION ALL
        SELECT j.* FROM jobs j WHERE f.verdict = 'key' AND j.job_id = i.key_job
    ) jr ON true
    ORDER BY f.n;
END
$$
"""
"""Create a batch of submissions; a row per submission that was not too late, with its
position ``n`` in the arrays."""


def upgrade() -> None:
    op.execute(CREATE_SUBMISSIONS)


def downgrade() -> None:
    op.execute(f"DROP FUNCTION assay_create_submissions({SIGNATURE})")
