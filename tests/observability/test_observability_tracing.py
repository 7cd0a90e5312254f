"""One trace per job: SubmitAssessment → the archive's CreateSubmission → the relay's
publishes → the worker's start, analysis and report → the notifier's deliveries, all under
the submission's trace (every service in-process, spans in memory); logs carry its id."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator, Sequence

import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from assay.archive.v1 import archive_service_pb2_grpc as archive_grpc
from assay.assessment.v1 import assessment_service_pb2 as pb
from assaylib import tracing
from assaylib.auth import bearer_token_interceptors
from assaylib.logs import JsonFormatter
from tests.archive.helpers import Client, talent_data, wait_until
from tests.conftest import token
from tests.observability.conftest import Mesh

SUBMIT = "/assay.assessment.v1.AssessmentService/SubmitAssessment"
EVENTS = ("analysis.queued", "analysis.started", "analysis.completed")


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    """Every log record of the test as the services write them off a terminal."""
    lines = io.StringIO()
    handler = logging.StreamHandler(lines)
    handler.setFormatter(JsonFormatter("test"))
    root = logging.getLogger()
    root.addHandler(handler)
    level = root.level
    root.setLevel(logging.INFO)  # setLevel, not .level: loggers cache what was enabled
    yield lines
    root.removeHandler(handler)
    root.setLevel(level)


def named(spans: Sequence[ReadableSpan], name: str) -> ReadableSpan:
    """The one span called ``name``."""
    found = [s for s in spans if s.name.lstrip("/") == name.lstrip("/")]
    assert len(found) == 1, (name, sorted(s.name for s in spans))
    return found[0]


def ancestors(span: ReadableSpan, spans: Sequence[ReadableSpan]) -> list[str]:
    """The names of ``span``'s parents, nearest first (within the recorded spans)."""
    by_id = {s.context.span_id: s for s in spans}
    chain, parent = [], span.parent
    while parent is not None and parent.span_id in by_id:
        above = by_id[parent.span_id]
        chain.append(above.name)
        parent = above.parent
    return chain


async def test_one_trace_joins_every_service_and_the_relay(
    traced_mesh: Mesh, spans: InMemorySpanExporter, json_logs: io.StringIO
) -> None:
    mesh = traced_mesh
    channel = grpc.aio.insecure_channel(
        f"127.0.0.1:{mesh.archive.port}", interceptors=bearer_token_interceptors(token("operator"))
    )
    await Client(archive_grpc.ArchiveServiceStub(channel)).grant("alice", 1)
    await channel.close()
    watcher = mesh.watchers.open(user="alice")
    await watcher.live()
    await mesh.start_worker()

    reply = await mesh.client("alice").SubmitAssessment(
        pb.SubmitAssessmentRequest(assessment_data=talent_data())
    )
    job_id = reply.job.job_id
    assert [e.event_type for e in await watcher.events(3)] == list(EVENTS)

    def finished() -> list[ReadableSpan]:
        return [s for s in spans.get_finished_spans() if s.name != "test"]

    async def delivered_all() -> bool:
        names = {s.name for s in finished()}
        return all(f"notifier deliver {e}" in names for e in EVENTS)

    await wait_until(delivered_all)
    root = named(finished(), SUBMIT)
    trace_id = root.context.trace_id
    joined = [s for s in finished() if s.context.trace_id == trace_id]
    expected = [
        SUBMIT,
        "archive.create_submission",
        "publish analysis job",
        *(f"publish {e}" for e in EVENTS),
        "worker process job",
        "worker start",
        "worker analyze",
        "worker report",
        *(f"notifier deliver {e}" for e in EVENTS),
    ]
    for name in expected:
        named(joined, name)  # exactly one of each, in the submission's trace
    scopes = {s.instrumentation_scope.name.split(".")[0] for s in joined if s.instrumentation_scope}
    assert {"archive_svc", "worker", "notifier", "opentelemetry"} <= scopes

    # Each hop is a child of the one before: the trace is a tree rooted at the submission.
    create = named(joined, "archive.create_submission")
    assert SUBMIT.lstrip("/") in [n.lstrip("/") for n in ancestors(create, joined)]
    assert dict(create.attributes or {})["assay.job_id"] == job_id
    process = named(joined, "worker process job")
    assert ancestors(process, joined)[:2] == ["publish analysis job", "archive.create_submission"]
    for step in ("worker start", "worker analyze", "worker report"):
        assert "worker process job" in ancestors(named(joined, step), joined)
    for event in EVENTS:
        deliver = named(joined, f"notifier deliver {event}")
        assert ancestors(deliver, joined)[0] == f"publish {event}"
        assert dict(deliver.attributes or {})["assay.watches"] == 1
    # The archive's own RPC spans (gRPC instrumentation) are recorded too; health checks and
    # the hours-long WatchJobs are not.
    assert any("ArchiveService/" in s.name for s in finished())
    health = grpc.aio.insecure_channel(f"127.0.0.1:{mesh.assessment.port}")
    checked = await health_pb2_grpc.HealthStub(health).Check(health_pb2.HealthCheckRequest())
    await health.close()
    assert checked.status == health_pb2.HealthCheckResponse.SERVING
    assert not [s.name for s in finished() if "Health" in s.name or "WatchJobs" in s.name]

    # The logs name the job and the trace it belongs to.
    records = [json.loads(line) for line in json_logs.getvalue().splitlines()]
    of_job = [r for r in records if r.get("job_id") == job_id]
    assert of_job, "no log line names the job"
    assert any(r.get("trace_id") == f"{trace_id:032x}" for r in of_job)
    started = [r for r in of_job if r["message"] == "attempt started"]
    assert started and started[0]["trace_id"] == f"{trace_id:032x}" and started[0]["span_id"]


async def test_tracing_off_adds_nothing(mesh: Mesh) -> None:
    assert not tracing.enabled()
    assert tracing.traceparent() == "" and tracing.server_interceptors() == []
    assert tracing.client_interceptors() == []
    span, passed_on = tracing.item_span("x", __name__, "not-a-traceparent")
    assert passed_on == "" and not span.is_recording()
    well_formed = "00-" + "1" * 32 + "-" + "2" * 16 + "-01"
    assert tracing.item_span("x", __name__, well_formed)[1] == well_formed


def test_an_unsampled_trace_is_passed_on_not_recorded(spans: InMemorySpanExporter) -> None:
    unsampled = "00-" + "a" * 32 + "-" + "b" * 16 + "-00"
    with tracing.span("outer", __name__, parent={"traceparent": unsampled}) as outer:
        assert not outer.is_recording()
        assert tracing.traceparent() == unsampled  # handed on as it came
        with tracing.span("inner", __name__) as inner:  # below it: not recorded either
            assert not inner.is_recording()
    span, passed_on = tracing.item_span("item", __name__, unsampled)
    assert passed_on == unsampled and not span.is_recording()
    sampled = unsampled[:-2] + "01"
    with tracing.span("recorded", __name__, parent=sampled) as recorded:
        assert recorded.is_recording()
    assert [s.name for s in spans.get_finished_spans()] == ["recorded"]
    assert tracing.traceparent() == ""  # nothing current after the blocks


def test_ratio_zero_begins_no_trace_but_records_a_callers() -> None:
    exporter = InMemorySpanExporter()
    tracing.install("test", [SimpleSpanProcessor(exporter)], sampler=tracing.ratio_sampler(0.0))
    try:
        with tracing.span("root", __name__) as root:
            assert not root.is_recording()
        callers = "00-" + "c" * 32 + "-" + "d" * 16 + "-01"
        with tracing.span("joined", __name__, parent=callers) as joined:
            assert joined.is_recording()
    finally:
        tracing.uninstall()
    assert [s.name for s in exporter.get_finished_spans()] == ["joined"]
