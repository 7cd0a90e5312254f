"""The job state machine (ARCHITECTURE §3): one table, enforced by the SQL in store.py.

Every transition is a compare-and-set UPDATE whose WHERE clause names the source
statuses below; a row that no longer matches is refused with INVALID_TRANSITION.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from archive_svc.models import JobStatus


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
    """One row of the state table."""

    name: str
    sources: tuple[JobStatus, ...]
    target: JobStatus
    token: Token
    event: EventType

    @property
    def source_names(self) -> list[str]:
        """The source statuses as the strings the SQL compares against."""
        return [status.value for status in self.sources]


Q, P, C, F, X = (
    JobStatus.QUEUED,
    JobStatus.PROCESSING,
    JobStatus.COMPLETED,
    JobStatus.FAILED,
    JobStatus.CANCELLED,
)

CREATE = Transition("create", (), Q, Token.DEBIT, EventType.QUEUED)
START = Transition("start", (Q,), P, Token.NONE, EventType.STARTED)
# A redelivered message takes over a PROCESSING job once its lease has expired.
TAKEOVER = Transition("takeover", (P,), P, Token.NONE, EventType.STARTED)
COMPLETE = Transition("complete", (P,), C, Token.NONE, EventType.COMPLETED)
FAIL = Transition("fail", (Q, P), F, Token.REFUND, EventType.FAILED)
SWEEP = Transition("sweep", (P,), F, Token.REFUND, EventType.STUCK)
# The sweep gives up on a QUEUED job whose message it re-published max_attempts times.
SWEEP_QUEUED = Transition("sweep_queued", (Q,), F, Token.REFUND, EventType.STUCK)
CANCEL = Transition("cancel", (Q,), X, Token.REFUND, EventType.CANCELLED)
# The worker reports that it stopped a PROCESSING job whose cancellation it saw.
CANCEL_ACK = Transition("cancel_ack", (P,), X, Token.REFUND, EventType.CANCELLED)
RETRY = Transition("retry", (F,), Q, Token.DEBIT, EventType.QUEUED)

TABLE: tuple[Transition, ...] = (
    CREATE,
    START,
    TAKEOVER,
    COMPLETE,
    FAIL,
    SWEEP,
    SWEEP_QUEUED,
    CANCEL,
    CANCEL_ACK,
    RETRY,
)
