"""One job message, from arrival to its acknowledgement: start the attempt, heartbeat,
analyse, report the outcome to the archive, and only then ack, terminate or nak."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, TypeVar

from google.protobuf.message import DecodeError
from nats.aio.msg import Msg
from opentelemetry.trace import SpanKind

from assay.common.v1 import assessment_pb2, job_pb2
from assay.events.v1 import events_pb2
from assaylib import errors, tracing
from assaylib.config import Settings
from assaylib.jobs import ANALYSIS_TIMEOUT, ATTEMPTS_EXHAUSTED, INTERNAL_ERROR, status_name
from worker import metrics
from worker.analyzers.errors import AnalysisError
from worker.archive_client import ArchiveClient
from worker.heartbeat import Heartbeat, Lease, Verdict
from worker.retry import ShuttingDown, backoff, retry_transient

T = TypeVar("T")

log = logging.getLogger(__name__)

AnalyzeFn = Callable[
    [str, assessment_pb2.AssessmentData, assessment_pb2.RawResponses | None, str],
    assessment_pb2.PersonaProfile,
]
"""The analyzer entry point (``worker.analyzers.analyze``: assessment name, data, raw
responses, locale); pure, synchronous, CPU-bound."""

RETRY_BASE = 1.0  # seconds; transient failures back off 1, 2, 4 … s
RETRY_CAP = 60.0


class Outcome(enum.StrEnum):
    """What became of one message."""

    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    LEASE_LOST = "lease_lost"
    DROPPED = "dropped"  # the archive refused (job finished, unknown, held elsewhere)
    RETRY = "retry"  # naked for a later attempt
    SHUTDOWN = "shutdown"  # naked because the worker is stopping
    MALFORMED = "malformed"


class Action(enum.Enum):
    """How the message is acknowledged."""

    ACK = "ack"
    TERM = "term"
    NAK = "nak"


@dataclass(frozen=True)
class Decision:
    """The outcome of a message and how to acknowledge it."""

    outcome: Outcome
    action: Action
    reason: str
    delay: float = 0.0


def parse_message(data: bytes) -> events_pb2.AnalysisJobMessage | None:
    """The queue message, or None when it is not one."""
    try:
        message = events_pb2.AnalysisJobMessage.FromString(data)
    except DecodeError:
        return None
    return message if message.job_id else None


def error_code_of(err: BaseException) -> str:
    """The error code a job records for a transient failure."""
    if isinstance(err, AnalysisError):
        return err.error_code
    if isinstance(err, TimeoutError):
        return ANALYSIS_TIMEOUT
    if isinstance(err, errors.AssayError):
        return f"ARCHIVE_{err.reason}"
    return INTERNAL_ERROR


class JobRunner:
    """Runs one message at a time per call of ``run``; shared by every slot of a worker."""

    def __init__(
        self,
        archive: ArchiveClient,
        settings: Settings,
        worker_id: str,
        analyze: AnalyzeFn,
        executor: Executor,
        shutdown: asyncio.Event,
    ) -> None:
        self.archive = archive
        self.settings = settings
        self.worker_id = worker_id
        self.analyze = analyze
        self.executor = executor
        self.shutdown = shutdown
        # A naked attempt's redelivery must find its lease expired, so another worker's
        # StartJob can take it over: wait the lease plus one heartbeat of margin.
        self.lease_delay = settings.lease_timeout + settings.heartbeat_interval
        self._shutdown_seen: asyncio.Task[bool] | None = None

    def _shutting_down(self) -> asyncio.Task[bool]:
        """Done once ``shutdown`` is set: one task shared by every attempt of this runner."""
        if self._shutdown_seen is None:
            self._shutdown_seen = asyncio.create_task(self.shutdown.wait(), name="shutdown")
        return self._shutdown_seen

    def close(self) -> None:
        """Let go of what the runner keeps between messages (once none is held)."""
        if self._shutdown_seen is not None:
            self._shutdown_seen.cancel()
            self._shutdown_seen = None

    async def run(self, msg: Msg) -> Outcome:
        """Handle ``msg`` to the end and acknowledge it; return what became of it."""
        metrics.JOBS_IN_FLIGHT.inc()
        try:
            message = parse_message(msg.data)
            if message is None:
                log.error("unparseable job message terminated", extra={"subject": msg.subject})
                return await self._dispose(msg, Decision(Outcome.MALFORMED, Action.TERM, "bad"))
            extra = {"job_id": message.job_id, "worker_id": self.worker_id}
            # The message's traceparent header: the job's trace, begun by its submission.
            with tracing.span(
                "worker process job", __name__, parent=msg.headers, kind=SpanKind.CONSUMER
            ) as span:
                span.set_attributes(
                    {"assay.job_id": message.job_id, "assay.worker_id": self.worker_id}
                )
                heartbeat = Heartbeat(msg, self.archive, self.settings.heartbeat_interval, extra)
                heartbeat.start()
                try:
                    decision = await self._decide(message, heartbeat)
                finally:
                    await heartbeat.stop()
                span.set_attribute("assay.outcome", decision.outcome.value)
                log.info(
                    "job message %s: %s (%s)",
                    decision.action.value,
                    decision.outcome,
                    decision.reason,
                    extra=heartbeat.log_extra,
                )
                return await self._dispose(msg, decision)
        finally:
            metrics.JOBS_IN_FLIGHT.dec()

    async def _dispose(self, msg: Msg, decision: Decision) -> Outcome:
        if decision.action is Action.NAK:
            metrics.JOBS_NAKED.labels(decision.reason).inc()
            await msg.nak(delay=decision.delay)
        elif decision.action is Action.TERM:
            await msg.term()
        else:
            await msg.ack()
        if decision.outcome in (Outcome.DROPPED, Outcome.MALFORMED, Outcome.LEASE_LOST):
            metrics.JOBS_DROPPED.labels(decision.reason).inc()
        return decision.outcome

    async def _decide(
        self, message: events_pb2.AnalysisJobMessage, heartbeat: Heartbeat
    ) -> Decision:
        try:
            started = await self._begin(message, heartbeat)
            if isinstance(started, Decision):
                return started
            lease = Lease(message.job_id, self.worker_id, started.attempt)
            heartbeat.hold(lease)
            metrics.JOBS_STARTED.inc()
            log.info("attempt started", extra=lease.log_extra())
            return await self._attempt(message, lease, heartbeat)
        except Exception:
            log.exception("unexpected error handling a job", extra=heartbeat.log_extra)
            return Decision(Outcome.RETRY, Action.NAK, "bug", self.lease_delay)

    async def _archive(self, call: Callable[[], Awaitable[T]], log_extra: dict[str, Any]) -> T:
        """An archive call retried in place (the heartbeat keeps the message) while the
        archive is unreachable, up to the stuck-job horizon."""
        deadline = time.monotonic() + self.settings.stuck_after
        return await retry_transient(
            call, deadline=deadline, stop=self.shutdown, log_extra=log_extra
        )

    async def _begin(
        self, message: events_pb2.AnalysisJobMessage, heartbeat: Heartbeat
    ) -> job_pb2.Job | Decision:
        """Create the result row if the producer did not, then StartJob."""
        extra = heartbeat.log_extra
        job_id = message.job_id
        try:
            if not message.result_id:
                data, raw = message.assessment_data, message.raw_responses
                result = await self._archive(
                    lambda: self.archive.create_result(job_id, data, raw), extra
                )
                log.info("legacy message: result row %s", result.result_id, extra=extra)
            with tracing.span("worker start", __name__):
                job = await self._archive(
                    lambda: self.archive.start_job(job_id, self.worker_id), extra
                )
        except ShuttingDown:
            return Decision(Outcome.SHUTDOWN, Action.NAK, "shutdown")
        except errors.AssayError as err:
            return self._start_refused(err, extra)
        if job.status != job_pb2.JOB_STATUS_PROCESSING:
            status = status_name(job.status)
            log.info("job came back %s (%s); dropping", status, job.error_code, extra=extra)
            return Decision(Outcome.DROPPED, Action.ACK, "finished")
        return job

    def _start_refused(self, err: errors.AssayError, extra: dict[str, Any]) -> Decision:
        log.info("start refused: %s", err, extra=extra)
        if isinstance(err, errors.NotFound | errors.InvalidArgument):
            return Decision(Outcome.MALFORMED, Action.TERM, "unknown_job")
        if isinstance(err, errors.FailedPrecondition):
            if err.metadata.get("status") == "PROCESSING":
                # Another attempt holds a live lease. Its worker may still die, so keep the
                # message and look again once that lease could have expired.
                return Decision(Outcome.RETRY, Action.NAK, "held", self.lease_delay)
            return Decision(Outcome.DROPPED, Action.ACK, "finished")
        # The archive stayed unreachable for the whole retry horizon.
        return Decision(Outcome.RETRY, Action.NAK, "archive_unavailable", RETRY_CAP)

    async def _attempt(
        self, message: events_pb2.AnalysisJobMessage, lease: Lease, heartbeat: Heartbeat
    ) -> Decision:
        """Analyse while heartbeating; stop early on lease loss, cancellation or shutdown."""
        work = asyncio.create_task(self._analyse(message, lease))
        # Futures, not a task per event per job: asyncio.wait leaves them as they are.
        interruptions: list[asyncio.Future[Any]] = [
            work,
            heartbeat.verdict_reached,
            self._shutting_down(),
        ]
        await asyncio.wait(interruptions, return_when=asyncio.FIRST_COMPLETED)
        if work.done():
            return await self._report(work, lease)
        work.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await work
        if heartbeat.verdict is Verdict.LEASE_LOST:
            return Decision(Outcome.LEASE_LOST, Action.ACK, "lease_lost")
        if heartbeat.verdict is Verdict.CANCEL_REQUESTED:
            return await self._report_cancelled(lease)
        return Decision(Outcome.SHUTDOWN, Action.NAK, "shutdown", self.lease_delay)

    async def _analyse(
        self, message: events_pb2.AnalysisJobMessage, lease: Lease
    ) -> assessment_pb2.PersonaProfile:
        if self.settings.analyzer_delay > 0:
            await asyncio.sleep(self.settings.analyzer_delay)
        raw = message.raw_responses if message.HasField("raw_responses") else None
        # A message from a producer older than locales names none: write in the default.
        locale = message.locale or self.settings.default_locale
        started = time.perf_counter()
        with tracing.span("worker analyze", __name__, attributes={"assay.attempt": lease.attempt}):
            # A thread, not the event loop: heartbeats keep flowing while the analyzer runs.
            future = asyncio.get_running_loop().run_in_executor(
                self.executor,
                self.analyze,
                message.assessment_name,
                message.assessment_data,
                raw,
                locale,
            )
            profile = await asyncio.wait_for(future, timeout=self.settings.analysis_timeout)
        metrics.ANALYSIS_SECONDS.observe(time.perf_counter() - started)
        return profile

    async def _report(
        self, work: asyncio.Task[assessment_pb2.PersonaProfile], lease: Lease
    ) -> Decision:
        try:
            profile = work.result()
        except AnalysisError as err:
            if err.permanent:
                return await self._fail(lease, err.error_code, str(err))
            return await self._retry_or_give_up(lease, err)
        except Exception as err:
            return await self._retry_or_give_up(lease, err)
        return await self._settle(
            lambda: self.archive.complete_job(
                lease.job_id, lease.worker_id, lease.attempt, profile
            ),
            lease,
            Decision(Outcome.COMPLETED, Action.ACK, "completed"),
        )

    async def _retry_or_give_up(self, lease: Lease, err: BaseException) -> Decision:
        code = error_code_of(err)
        log.warning(
            "attempt %d of %d failed: %s: %s",
            lease.attempt,
            self.settings.max_attempts,
            code,
            err or type(err).__name__,
            extra=lease.log_extra(),
        )
        if lease.attempt >= self.settings.max_attempts:
            message = f"gave up after {lease.attempt} attempt(s); last error {code}: {err}"
            return await self._fail(lease, ATTEMPTS_EXHAUSTED, message)
        delay = max(self.lease_delay, backoff(lease.attempt, base=RETRY_BASE, cap=RETRY_CAP))
        return Decision(Outcome.RETRY, Action.NAK, "transient", delay)

    async def _fail(self, lease: Lease, code: str, message: str) -> Decision:
        decision = await self._settle(
            lambda: self.archive.fail_job(
                lease.job_id, code, message, worker_id=lease.worker_id, attempt=lease.attempt
            ),
            lease,
            Decision(Outcome.FAILED, Action.TERM, code),
        )
        if decision.outcome is Outcome.FAILED:
            metrics.JOBS_FAILED.labels(code).inc()
        return decision

    async def _report_cancelled(self, lease: Lease) -> Decision:
        return await self._settle(
            lambda: self.archive.report_cancelled(lease.job_id, lease.worker_id, lease.attempt),
            lease,
            Decision(Outcome.CANCELLED, Action.ACK, "cancelled"),
        )

    async def _settle(
        self, report: Callable[[], Awaitable[job_pb2.Job]], lease: Lease, success: Decision
    ) -> Decision:
        """Send the attempt's final report. A refusal means the attempt was superseded or
        swept: drop the message. If the archive stays unreachable (or the worker stops),
        hand the message back once the lease can expire; the next StartJob settles it."""
        try:
            with tracing.span(
                "worker report", __name__, attributes={"assay.report": success.reason}
            ):
                await self._archive(report, lease.log_extra())
        except ShuttingDown:
            return Decision(Outcome.SHUTDOWN, Action.NAK, "shutdown", self.lease_delay)
        except errors.AssayError as err:
            if isinstance(err, errors.FailedPrecondition | errors.NotFound):
                log.info("report refused: %s", err, extra=lease.log_extra())
                return Decision(Outcome.DROPPED, Action.ACK, "stale_attempt")
            return Decision(Outcome.RETRY, Action.NAK, "archive_unavailable", self.lease_delay)
        if success.outcome is Outcome.COMPLETED:
            metrics.JOBS_COMPLETED.inc()
        return success
