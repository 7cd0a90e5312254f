"""After one job through the whole mesh, every operator metric exists and moved by exactly
what that job did (docs/operations.md lists them); the sweep's metrics after one sweep."""

from __future__ import annotations

import threading
from collections.abc import Mapping

from google.protobuf.duration_pb2 import Duration
from prometheus_client import REGISTRY

from assay.archive.v1 import archive_service_pb2 as archive_pb
from assay.assessment.v1 import assessment_service_pb2 as pb
from assay.common.v1 import assessment_pb2
from assaylib.streams import ensure_streams, ensure_worker_consumer
from tests.archive.helpers import Client, expire_lease, talent_data, wait_until
from tests.observability.conftest import Mesh
from worker.analyzers import analyze
from worker.app import max_deliver_for

Labels = Mapping[str, str]
WAIT = 20.0  # seconds


def value(name: str, **labels: str) -> float:
    """A sample's value now (0 when it was never set)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


class Moves:
    """The change of samples since this was made."""

    def __init__(self, *samples: tuple[str, Labels]) -> None:
        self.before = {
            (name, tuple(labels.items())): value(name, **labels) for name, labels in samples
        }

    def of(self, name: str, **labels: str) -> float:
        """How far one sample moved (it must have been listed)."""
        return value(name, **labels) - self.before[(name, tuple(labels.items()))]


def transition(previous: str, to: str, rule: str) -> tuple[str, Labels]:
    """The transitions counter of one state table row."""
    labels = {"from_status": previous, "to_status": to, "rule": rule}
    return "assay_job_transitions_total", labels


SUBMIT_RPC = {
    "service": "assay.assessment.v1.AssessmentService",
    "method": "SubmitAssessment",
    "code": "OK",
}
COUNTED: tuple[tuple[str, Labels], ...] = (
    ("assay_assessment_submissions_total", {"outcome": "accepted", "reason": ""}),
    ("assay_assessment_submit_duration_seconds_count", {"outcome": "accepted"}),
    ("assay_rpc_requests_total", SUBMIT_RPC),
    transition("NONE", "QUEUED", "create"),
    transition("QUEUED", "PROCESSING", "start"),
    transition("PROCESSING", "COMPLETED", "complete"),
    ("assay_job_duration_seconds_count", {"outcome": "COMPLETED"}),
    ("assay_tokens_debited_total", {}),
    ("assay_tokens_refunded_total", {}),
    ("assay_outbox_published_total", {}),
    ("assay_worker_jobs_started_total", {}),
    ("assay_worker_jobs_completed_total", {}),
    ("assay_worker_analysis_duration_seconds_count", {}),
    ("assay_worker_heartbeats_total", {"kind": "ack"}),
    ("assay_worker_heartbeats_total", {"kind": "archive"}),
    ("assay_worker_heartbeat_failures_total", {"kind": "archive"}),
    ("assay_notifier_events_sent_total", {}),
    ("assay_notifier_event_delivery_seconds_count", {}),
)


def slow_analyze(
    assessment_name: str,
    data: assessment_pb2.AssessmentData,
    raw: assessment_pb2.RawResponses | None,
    locale: str,
) -> assessment_pb2.PersonaProfile:
    """The real analysis, held (in the worker's analysis thread) until the worker has sent an
    archive heartbeat for it, so the heartbeat counters have something to count."""
    held = value("assay_worker_heartbeats_total", kind="archive")
    pause, waited = threading.Event(), 0.0
    while value("assay_worker_heartbeats_total", kind="archive") <= held and waited < WAIT:
        pause.wait(0.05)
        waited += 0.05
    return analyze(assessment_name, data, raw, locale)


async def test_one_job_moves_every_metric_by_what_it_did(mesh: Mesh, archive_stub) -> None:
    client = Client(archive_stub)
    await client.grant("alice", 2)
    js = mesh.nc.jetstream()
    await ensure_streams(js, mesh.names, events_max_age=mesh.settings.events_max_age)
    await ensure_worker_consumer(
        js,
        mesh.names,
        ack_wait=mesh.settings.lease_timeout,
        max_deliver=max_deliver_for(mesh.settings.max_attempts),
    )
    watcher = mesh.watchers.open(user="alice")
    await watcher.live()
    assert value("assay_notifier_active_watches") >= 1
    moves = Moves(*COUNTED)

    reply = await mesh.client("alice").SubmitAssessment(
        pb.SubmitAssessmentRequest(assessment_data=talent_data())
    )
    (queued,) = await watcher.events(1)
    assert queued.event_type == "analysis.queued" and queued.job_id == reply.job.job_id

    async def queued_message_pending() -> bool:
        found = await mesh.archive.archive.status.sample()
        return found.consumer_pending == 1

    await wait_until(queued_message_pending)  # the relay's publish is JetStream's to count
    assert value("assay_jobs", status="QUEUED") == 1
    assert value("assay_jobs", status="PROCESSING") == 0
    assert value("assay_jobs_oldest_age_seconds", status="QUEUED") > 0
    assert value("assay_jetstream_consumer_pending") == 1

    await mesh.start_worker(analyze=slow_analyze)
    later = await watcher.events(2)
    assert [e.event_type for e in later] == ["analysis.started", "analysis.completed"]

    async def relay_counted_all() -> bool:  # one queue message and three events
        return moves.of("assay_outbox_published_total") >= 4

    await wait_until(relay_counted_all)
    found = await mesh.archive.archive.status.sample()
    assert found.jobs == {"QUEUED": 0, "PROCESSING": 0} and found.outbox_unsent == 0
    for gauge in ("assay_outbox_unsent", "assay_outbox_oldest_unsent_age_seconds"):
        assert value(gauge) == 0, gauge
    assert value("assay_jobs", status="QUEUED") == 0
    assert value("assay_jobs_oldest_age_seconds", status="QUEUED") == 0
    assert value("assay_jetstream_consumer_pending") == 0
    assert value("assay_jetstream_consumer_ack_pending") == 0
    assert value("assay_jetstream_consumer_redelivered") == 0

    for name, labels in COUNTED[:8]:  # one submission, three transitions, one end, one debit
        assert moves.of(name, **labels) == 1, (name, labels)
    assert moves.of("assay_tokens_refunded_total") == 0
    assert moves.of("assay_outbox_published_total") == 4
    assert moves.of("assay_worker_jobs_started_total") == 1
    assert moves.of("assay_worker_jobs_completed_total") == 1
    assert moves.of("assay_worker_analysis_duration_seconds_count") == 1
    assert moves.of("assay_worker_heartbeats_total", kind="ack") >= 1
    assert moves.of("assay_worker_heartbeats_total", kind="archive") >= 1
    assert moves.of("assay_worker_heartbeat_failures_total", kind="archive") == 0
    assert moves.of("assay_notifier_events_sent_total") == 3
    assert moves.of("assay_notifier_event_delivery_seconds_count") == 3
    assert value("assay_worker_jobs_in_flight") == 0


async def test_a_sweep_moves_the_sweep_and_refund_metrics(archive_stub, database: str) -> None:
    client = Client(archive_stub)
    await client.grant("alice", 10)
    jobs = [await client.start(await client.submit()) for _ in range(4)]
    for job in jobs[:3]:
        await expire_lease(database, job.job_id, seconds=300)
    swept_row = transition("PROCESSING", "FAILED", "sweep")
    moves = Moves(
        ("assay_sweep_jobs_failed_total", {}),
        ("assay_sweep_held_back_total", {}),
        ("assay_refunds_total", {"rule": "sweep"}),
        ("assay_tokens_refunded_total", {}),
        ("assay_job_duration_seconds_count", {"outcome": "FAILED"}),
        swept_row,
    )
    request = archive_pb.SweepStuckJobsRequest(
        stuck_after=Duration(seconds=120),
        max_processing=Duration(seconds=600),
        max_fraction=0.5,
        guard_min_count=2,
    )
    held = await archive_stub.SweepStuckJobs(request)
    assert held.held_back and held.failed == 0
    assert moves.of("assay_sweep_held_back_total") == 1
    assert moves.of("assay_sweep_jobs_failed_total") == 0

    request.force = True
    swept = await archive_stub.SweepStuckJobs(request)
    assert swept.failed == 3
    assert moves.of("assay_sweep_jobs_failed_total") == 3
    assert moves.of("assay_refunds_total", rule="sweep") == 3
    assert moves.of("assay_tokens_refunded_total") == 3
    assert moves.of(swept_row[0], **swept_row[1]) == 3
    assert moves.of("assay_job_duration_seconds_count", outcome="FAILED") == 3
    assert moves.of("assay_sweep_held_back_total") == 1
