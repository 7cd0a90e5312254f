"""The job state machine (ARCHITECTURE §3): one table, and the engine that applies it.

Each row is everything a transition is: the statuses it leaves, the guard that must hold on
the locked job row, the columns it sets, what it does to the user's tokens, and the event it
emits. `archive_svc/store/transitions.py` turns an operation (the rows an RPC may apply, in
order) into one SQL statement: lock the job, pick the first row whose sources and guard hold,
apply it, write the ledger movement and the outbox rows, and return the new row — or, when
no row applies, the job as it is (the refusal, explained without a second query).

SQL fragments below read two relations: ``j``, the job row (locked), and ``i``, the request
(its parameters, one row per job in a batch). The debiting rows (CREATE, RETRY) lock the
user's account before anything else, so they run as the PL/pgSQL functions of migration
0003 (`assay_create_submission`, `assay_retry_job`); a test walks every row against the
database, those two included.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from archive_svc.models import JobStatus
from assaylib.jobs import ATTEMPTS_EXHAUSTED
from assaylib.jobs import ERASED as ERASED_ERROR
from assaylib.jobs import STUCK as STUCK_ERROR


class EventType(enum.StrEnum):
    """The event each transition emits."""

    QUEUED = "analysis.queued"
    STARTED = "analysis.started"
    COMPLETED = "analysis.completed"
    FAILED = "analysis.failed"
    STUCK = "analysis.stuck"
    CANCELLED = "analysis.cancelled"


class Token(enum.Enum):
    """What a transition does to the user's tokens."""

    NONE = "none"
    DEBIT = "debit"
    REFUND = "refund"


@dataclass(frozen=True)
class Transition:
    """One row of the state table. A row without an event changes a job without moving it
    through the state machine (a heartbeat, a cancel request, a re-publication): no version
    bump, no event."""

    name: str
    sources: tuple[JobStatus, ...]
    target: JobStatus
    event: EventType | None
    guard: str = "true"
    sets: Mapping[str, str] = field(default_factory=dict)
    token: Token = Token.NONE
    refund_reason: str = "''"
    """The refund's ledger reason, an SQL expression over j and i."""
    queues: bool = False
    """Writes a queue message for the workers (payload built by the relay from the result row)."""

    @property
    def is_transition(self) -> bool:
        """Whether applying the row moves the job (a version bump and an event)."""
        return self.event is not None


Q, P, C, F, X = (
    JobStatus.QUEUED,
    JobStatus.PROCESSING,
    JobStatus.COMPLETED,
    JobStatus.FAILED,
    JobStatus.CANCELLED,
)

# ---- guards (SQL over j, the locked job, and i, the request) ------------------------------

HOLDER = "j.worker_id = i.worker_id AND j.attempt = i.attempt"
LEASE_EXPIRED = "j.heartbeat_at < now() - make_interval(secs => i.lease)"
OWNER = "(i.owner = '' OR j.user_id = i.owner)"
STUCK = (
    "(j.heartbeat_at < now() - make_interval(secs => i.stuck_after)"
    " OR j.started_at < now() - make_interval(secs => i.max_processing))"
)
LOST = (
    "j.updated_at < now() - make_interval(secs => i.max_queued) AND j.queue_held_by IS NULL"
    " AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.job_id = j.job_id AND o.kind = 'job'"
    " AND NOT outbox_published(o.txid, o.seq))"
)
"""A QUEUED job is lost when its queue message left the outbox longer than max_queued ago (or
it was re-published, or released, that long ago: both set ``updated_at``) and no worker
started it since. A job whose message the relay holds back (``queue_held_by``, migration
0017) is waiting its turn, not lost."""

# ---- what rows set -------------------------------------------------------------------------

NEW_ATTEMPT = {
    "attempt": "j.attempt + 1",
    "worker_id": "i.worker_id",
    "heartbeat_at": "now()",
    "started_at": "now()",
}
FINISHED = {"finished_at": "now()"}
REPORTED_FAILURE = {**FINISHED, "error_code": "i.error_code", "error_message": "i.error_message"}
UTC_TIME = "to_char({} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"

# ---- the table -----------------------------------------------------------------------------

CREATE = Transition("create", (), Q, EventType.QUEUED, token=Token.DEBIT, queues=True)
START = Transition("start", (Q,), P, EventType.STARTED, sets=NEW_ATTEMPT)
# A redelivered message takes over a PROCESSING job once its lease has expired.
TAKEOVER = Transition(
    "takeover",
    (P,),
    P,
    EventType.STARTED,
    guard=f"NOT j.cancel_requested AND j.attempt < i.max_attempts AND {LEASE_EXPIRED}",
    sets=NEW_ATTEMPT,
)
# An expired attempt that had been asked to cancel is cancelled by the next StartJob.
CANCEL_EXPIRED = Transition(
    "cancel_expired",
    (P,),
    X,
    EventType.CANCELLED,
    guard=f"j.cancel_requested AND {LEASE_EXPIRED}",
    sets=FINISHED,
    token=Token.REFUND,
    refund_reason="'cancelled'",
)
# An expired last attempt is failed by the next StartJob instead of taken over.
EXHAUSTED = Transition(
    "exhausted",
    (P,),
    F,
    EventType.FAILED,
    guard=f"NOT j.cancel_requested AND j.attempt >= i.max_attempts AND {LEASE_EXPIRED}",
    sets={
        **FINISHED,
        "error_code": f"'{ATTEMPTS_EXHAUSTED}'",
        "error_message": "'gave up after ' || i.max_attempts || ' attempt(s)'",
    },
    token=Token.REFUND,
    refund_reason="'attempts exhausted'",
)
HEARTBEAT = Transition("heartbeat", (P,), P, None, guard=HOLDER, sets={"heartbeat_at": "now()"})
COMPLETE = Transition(
    "complete",
    (P,),
    C,
    EventType.COMPLETED,
    guard=f"{HOLDER} AND j.result_id IS NOT NULL",
    sets={
        **FINISHED,
        "processing_time_ms": "CAST(extract(epoch FROM now() - j.started_at) * 1000 AS bigint)",
    },
)
FAIL = Transition(
    "fail",
    (P,),
    F,
    EventType.FAILED,
    guard=HOLDER,
    sets=REPORTED_FAILURE,
    token=Token.REFUND,
    refund_reason="'failed: ' || i.error_code",
)
# Without a worker: a QUEUED job or an expired lease (JetStream gave up on the message).
FAIL_UNHELD = Transition(
    "fail_unheld",
    (Q, P),
    F,
    EventType.FAILED,
    guard=f"(j.status = 'QUEUED' OR {LEASE_EXPIRED})",
    sets=REPORTED_FAILURE,
    token=Token.REFUND,
    refund_reason="'failed: ' || i.error_code",
)
CANCEL = Transition(
    "cancel",
    (Q,),
    X,
    EventType.CANCELLED,
    guard=OWNER,
    sets=FINISHED,
    token=Token.REFUND,
    refund_reason="'cancelled'",
)
# Cancelling a PROCESSING job asks its worker to stop; the worker's report finishes it.
REQUEST_CANCEL = Transition(
    "request_cancel", (P,), P, None, guard=OWNER, sets={"cancel_requested": "true"}
)
CANCEL_ACK = Transition(
    "cancel_ack",
    (P,),
    X,
    EventType.CANCELLED,
    guard=f"j.cancel_requested AND {HOLDER}",
    sets=FINISHED,
    token=Token.REFUND,
    refund_reason="'cancelled'",
)
RETRY = Transition(
    "retry",
    (F,),
    Q,
    EventType.QUEUED,
    guard=OWNER,
    sets={
        "attempt": "0",
        "worker_id": "NULL",
        "error_code": "NULL",
        "error_message": "NULL",
        "cancel_requested": "false",
        "started_at": "NULL",
        "heartbeat_at": "NULL",
        "finished_at": "NULL",
        "processing_time_ms": "NULL",
        "requeues": "0",
        "charge_count": "j.charge_count + 1",
        "token_cost": "i.cost",
    },
    token=Token.DEBIT,
    queues=True,
)
SWEEP = Transition(
    "sweep",
    (P,),
    F,
    EventType.STUCK,
    guard=STUCK,
    sets={
        **FINISHED,
        "error_code": f"'{STUCK_ERROR}'",
        "error_message": (
            "CASE WHEN j.heartbeat_at < now() - make_interval(secs => i.stuck_after)"
            " THEN 'no heartbeat from worker ' || coalesce(j.worker_id, '?') || ' since ' || "
            + UTC_TIME.format("j.heartbeat_at")
            + " ELSE 'processing for longer than ' || i.max_processing || ' s' END"
        ),
    },
    token=Token.REFUND,
    refund_reason="'stuck'",
)
# The sweep re-publishes a lost QUEUED job (a new message id) while it has re-publications left…
REQUEUE = Transition(
    "requeue",
    (Q,),
    Q,
    None,
    guard=f"{LOST} AND j.requeues < i.max_requeues AND j.result_id IS NOT NULL",
    sets={"requeues": "j.requeues + 1", "updated_at": "now()"},
    queues=True,
)
# …and gives up on it after max_attempts re-publications (or when it has no result row to
# rebuild the message from).
SWEEP_QUEUED = Transition(
    "sweep_queued",
    (Q,),
    F,
    EventType.STUCK,
    guard=f"{LOST} AND (j.requeues >= i.max_requeues OR j.result_id IS NULL)",
    sets={
        **FINISHED,
        "error_code": f"'{STUCK_ERROR}'",
        "error_message": (
            "'queued since ' || "
            + UTC_TIME.format("j.updated_at")
            + " || ', re-published ' || j.requeues || ' time(s); no worker started it'"
        ),
    },
    token=Token.REFUND,
    refund_reason="'lost in queue'",
)

# EraseUserData cancels the user's in-flight jobs at once (a PROCESSING one too: its worker
# learns from its next heartbeat that the lease is lost, and writes nothing more).
ERASE = Transition(
    "erase",
    (Q, P),
    X,
    EventType.CANCELLED,
    guard="j.user_id = i.user_id",
    sets={
        **FINISHED,
        "error_code": f"'{ERASED_ERROR}'",
        "error_message": "'cancelled: the user''s data was erased'",
    },
    token=Token.REFUND,
    refund_reason="'erased'",
)

TABLE: tuple[Transition, ...] = (
    CREATE,
    START,
    TAKEOVER,
    CANCEL_EXPIRED,
    EXHAUSTED,
    HEARTBEAT,
    COMPLETE,
    FAIL,
    FAIL_UNHELD,
    CANCEL,
    REQUEST_CANCEL,
    CANCEL_ACK,
    RETRY,
    SWEEP,
    REQUEUE,
    SWEEP_QUEUED,
    ERASE,
)
