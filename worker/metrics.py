"""The worker's Prometheus metrics, each defined once."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

JOBS_STARTED = Counter("assay_worker_jobs_started", "Attempts this worker began (StartJob).")
JOBS_COMPLETED = Counter("assay_worker_jobs_completed", "Jobs this worker completed.")
JOBS_FAILED = Counter(
    "assay_worker_jobs_failed", "Jobs this worker failed, by error code.", ["error_code"]
)
JOBS_NAKED = Counter(
    "assay_worker_jobs_naked", "Messages handed back for redelivery, by reason.", ["reason"]
)
JOBS_DROPPED = Counter(
    "assay_worker_jobs_dropped",
    "Messages acked or terminated without a result of ours, by reason.",
    ["reason"],
)
JOBS_IN_FLIGHT = Gauge("assay_worker_jobs_in_flight", "Messages this worker holds now.")
ANALYSIS_SECONDS = Histogram(
    "assay_worker_analysis_duration_seconds", "Time one analyzer run took (successful runs)."
)
HEARTBEATS = Counter(
    "assay_worker_heartbeats",
    "Heartbeats sent, by kind: ack (JetStream in-progress) or archive (the job's lease).",
    ["kind"],
)
HEARTBEAT_FAILURES = Counter(
    "assay_worker_heartbeat_failures",
    "Heartbeats whose JetStream (ack) or archive call failed, by kind.",
    ["kind"],
)
MAX_DELIVERIES = Counter(
    "assay_worker_max_deliveries",
    "Max-deliveries advisories handled, by outcome.",
    ["outcome"],
)
