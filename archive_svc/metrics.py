"""The archive's Prometheus metrics, each defined once (docs/operations.md lists them all).

Transitions, tokens and job durations are counted where each statement's outcome comes back;
the in-flight jobs, the outbox backlog and the workers' JetStream consumer are sampled by every
replica (``archive_svc.stats``): aggregate those gauges with ``max()``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from archive_svc.states import TABLE, Token

TRANSITIONS = Counter(
    "assay_job_transitions",
    "Job transitions committed, by status before and after and the state table's row.",
    ["from_status", "to_status", "rule"],
)
JOB_DURATION = Histogram(
    "assay_job_duration_seconds",
    "Time from a job's submission to its end, by outcome (its final status).",
    ["outcome"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
)
TOKENS_DEBITED = Counter("assay_tokens_debited", "Tokens charged by submissions and retries.")
REFUNDS = Counter("assay_refunds", "Refunds written, by the row that refunded.", ["rule"])
TOKENS_REFUNDED = Counter("assay_tokens_refunded", "Tokens given back by refunds.")
JOBS = Gauge("assay_jobs", "Jobs in a status now (QUEUED, PROCESSING; sampled).", ["status"])
OLDEST = Gauge(
    "assay_jobs_oldest_age_seconds",
    "Seconds since the oldest QUEUED job was queued, or the oldest PROCESSING job started.",
    ["status"],
)
OUTBOX_OLDEST = Gauge(
    "assay_outbox_oldest_unsent_age_seconds", "Age of the oldest unpublished outbox row."
)
CONSUMER_PENDING = Gauge(
    "assay_jetstream_consumer_pending", "Job messages the workers' consumer has not delivered."
)
CONSUMER_ACK_PENDING = Gauge(
    "assay_jetstream_consumer_ack_pending", "Job messages delivered to a worker, not yet acked."
)
CONSUMER_REDELIVERED = Gauge(
    "assay_jetstream_consumer_redelivered", "Job messages delivered more than once, now held."
)

PUBLISHED = Counter("assay_outbox_published_total", "Outbox messages published to JetStream")
PUBLISHED_AHEAD = Counter(
    "assay_outbox_published_ahead_total",
    "Queue messages published ahead of an outbox backlog: higher lanes', and users' within"
    " their ASSAY_QUEUED_PER_USER budget",
)
HELD = Counter(
    "assay_outbox_held_total",
    "Queue messages held back in the archive: their user had ASSAY_QUEUED_PER_USER jobs queued",
)
RELEASED = Counter(
    "assay_outbox_released_total",
    "Held queue messages released to the outbox, in turn, as their users' queued jobs started",
)
FAILURES = Counter("assay_outbox_relay_failures_total", "Relay rounds that failed and backed off")
UNSENT = Gauge("assay_outbox_unsent", "Outbox messages waiting to be published (the backlog)")
PURGED = Counter("assay_outbox_purged_total", "Published outbox rows deleted after retention")
SWEPT = Counter("assay_sweep_jobs_failed_total", "Stuck jobs failed (code STUCK) by sweeps")
HELD_BACK = Counter("assay_sweep_held_back_total", "Sweeps held back by the mass-failure guard")
SUBMISSIONS_TOO_LATE = Counter(
    "assay_submissions_too_late_total",
    "Submissions skipped, nothing written, because their caller's deadline had passed.",
)
REQUEUED = Counter(
    "assay_sweep_jobs_requeued_total", "Lost QUEUED jobs re-published to the queue by sweeps"
)
ERASURES = Counter(
    "assay_erasures_total",
    "Erasures finished: a user's on request (EraseUserData), or a retention pass that erased.",
    ["trigger"],
)
RESULTS_ERASED = Counter(
    "assay_results_erased_total",
    "Result rows whose content was erased, by trigger (request or retention).",
    ["trigger"],
)
ACCESS_RECORDS = Counter(
    "assay_access_records",
    "Reads of a user's result data by someone else, recorded in the access record, by RPC.",
    ["rpc"],
)
ACCESS_RECORDS_PRUNED = Counter(
    "assay_access_records_pruned",
    "Access records deleted by sweeps after ASSAY_ACCESS_RECORD_RETENTION.",
)

_ROWS = {row.name: row for row in TABLE}
TERMINAL = frozenset({"COMPLETED", "FAILED", "CANCELLED"})


def count_transition(rule: str, previous: str, job: Any) -> None:
    """Count one applied row of the state table (its tokens and, if it ended the job, the
    job's duration); ``job`` is the row after it."""
    row = _ROWS[rule]
    get = job.__getitem__
    if row.is_transition:
        TRANSITIONS.labels(previous, row.target.value, rule).inc()
    if row.token is Token.REFUND:
        REFUNDS.labels(rule).inc()
        TOKENS_REFUNDED.inc(get("token_cost"))
    elif row.token is Token.DEBIT:
        TOKENS_DEBITED.inc(get("token_cost"))
    if row.target.value in TERMINAL and row.is_transition:
        finished: dt.datetime = get("finished_at") or get("updated_at")
        JOB_DURATION.labels(row.target.value).observe(
            max((finished - get("created_at")).total_seconds(), 0.0)
        )
