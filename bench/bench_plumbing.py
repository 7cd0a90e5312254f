"""CPU per job of the services' own plumbing, without the network: what part 3 of issue 18
cut, measured without the noise of the rest of the stack on a shared 2-core machine.

Run from the repository root: ``python -m bench.bench_plumbing [--jobs N] [--rounds R]``.

* ``worker``: ``JobRunner.run`` over in-memory job messages (ack, nak and in-progress do
  nothing) and an archive stub that answers at once, through the real ``ArchiveClient`` and
  its batchers; the analyzer is replaced by a premade profile, 64 jobs in flight, as the
  bench's ``ASSAY_WORKER_CONCURRENCY``.
* ``submit``: ``Assessments.submit`` for 16 concurrent callers through the real
  ``ArchiveClient`` (batched CreateSubmissions) over a channel whose calls answer at once.
* ``pipeline``: one unary call through ``create_server``'s interceptors (metrics, error
  mapping, a remembered token's authentication, the decode guard; tracing off), each
  ``intercept_service`` awaited as grpc.aio does, with an in-memory context.

Each prints CPU microseconds per job (per call for ``pipeline``), every round.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import grpc
import uvloop

from assay.archive.v1 import archive_service_pb2 as archive_pb
from assay.assessment.v1 import assessment_service_pb2 as pb
from assay.common.v1 import job_pb2
from assay.events.v1 import events_pb2
from assaylib.access import ALL, AccessTable
from assaylib.auth import AuthInterceptor, Principal
from assaylib.config import Settings
from assaylib.issuer import Issuer, write_jwks
from assaylib.jobs import DEFAULT_ASSESSMENT
from assaylib.keys import TokenVerifier, VerifierSettings
from assessment_svc.archive_client import ArchiveClient as AssessmentArchive
from assessment_svc.archive_client import Budget
from assessment_svc.submissions import Assessments
from bench.load import sample
from worker.analyzers import analyze
from worker.archive_client import ArchiveClient as WorkerArchive
from worker.job_runner import JobRunner, Outcome

PROCESSING = job_pb2.JOB_STATUS_PROCESSING


async def per_job(jobs: int, rounds: int, run_all: Callable[[], Awaitable[None]]) -> list[float]:
    """CPU microseconds per job of ``run_all`` (which handles ``jobs``), after a warm-up."""
    await run_all()
    figures = []
    for _ in range(rounds):
        started = time.process_time()
        await run_all()
        figures.append((time.process_time() - started) / jobs * 1e6)
    return figures


class _WorkerStub:
    """The archive RPCs a worker makes, answered at once: started, completed, beating."""

    async def StartJobs(self, request: Any, **_: Any) -> archive_pb.StartJobsResponse:
        return archive_pb.StartJobsResponse(
            outcomes=[
                archive_pb.StartJobOutcome(
                    started=archive_pb.StartJobResponse(
                        job=job_pb2.Job(job_id=start.job_id, status=PROCESSING, attempt=1)
                    )
                )
                for start in request.starts
            ]
        )

    async def ReportJobs(self, request: Any, **_: Any) -> archive_pb.ReportJobsResponse:
        done = job_pb2.Job(status=job_pb2.JOB_STATUS_COMPLETED)
        return archive_pb.ReportJobsResponse(
            outcomes=[archive_pb.JobReportOutcome(job=done) for _ in request.reports]
        )

    async def Heartbeats(self, request: Any, **_: Any) -> archive_pb.HeartbeatsResponse:
        return archive_pb.HeartbeatsResponse(
            replies=[archive_pb.HeartbeatResponse() for _ in request.heartbeats]
        )


class _Message:
    """A job message whose acknowledgements go nowhere."""

    subject = "jobs"
    headers = None

    def __init__(self, data: bytes) -> None:
        self.data = data

    async def ack(self) -> None:
        return None

    async def nak(self, delay: float | None = None) -> None:
        return None

    async def term(self) -> None:
        return None

    async def in_progress(self) -> None:
        return None


async def worker(jobs: int, rounds: int) -> list[float]:
    """The worker's CPU per job outside the analyzer, NATS and gRPC."""
    profile = analyze(DEFAULT_ASSESSMENT, sample(1), None, "id")
    executor = ThreadPoolExecutor(64)
    archive = WorkerArchive(_WorkerStub(), timeout=5.0)  # type: ignore[arg-type]
    runner = JobRunner(
        archive, Settings(), "bench-1", lambda *_: profile, executor, asyncio.Event()
    )
    messages = [
        _Message(
            events_pb2.AnalysisJobMessage(
                job_id=str(uuid.uuid4()),
                result_id=str(uuid.uuid4()),
                assessment_name=DEFAULT_ASSESSMENT,
                assessment_data=sample(index),
            ).SerializeToString()
        )
        for index in range(jobs)
    ]
    room = asyncio.Semaphore(64)

    async def one(message: _Message) -> Outcome:
        async with room:
            return await runner.run(message)  # type: ignore[arg-type]

    async def run_all() -> None:
        outcomes = await asyncio.gather(*[one(message) for message in messages])
        assert set(outcomes) == {Outcome.COMPLETED}, set(outcomes)

    try:
        return await per_job(jobs, rounds, run_all)
    finally:
        if hasattr(runner, "close"):  # absent from checkouts before issue 18 part 3
            runner.close()
        executor.shutdown()


class _ArchiveChannel:
    """A channel whose CreateSubmissions calls answer at once, each submission created."""

    def unary_unary(self, *_: Any, **__: Any) -> Any:
        async def call(request: Any, **_: Any) -> Any:
            return archive_pb.CreateSubmissionsResponse(
                outcomes=[
                    archive_pb.CreateSubmissionOutcome(
                        created=archive_pb.CreateSubmissionResponse(
                            job=job_pb2.Job(job_id=str(uuid.uuid4())), tokens_remaining=5
                        )
                    )
                    for _ in request.submissions
                ]
            )

        return call

    unary_stream = stream_unary = stream_stream = unary_unary


async def submit(jobs: int, rounds: int) -> list[float]:
    """The assessment service's CPU per submission outside the gRPC server and channel."""
    assessments = Assessments(
        archive=AssessmentArchive(_ArchiveChannel()),  # type: ignore[arg-type]
        max_inflight=0,
    )
    caller = Principal("bench-user", frozenset({"user"}))
    requests = [
        pb.SubmitAssessmentRequest(
            assessment_data=sample(index), request_id=str(uuid.uuid4()), locale="id"
        )
        for index in range(16)
    ]

    async def run_all() -> None:
        for _ in range(jobs // len(requests)):
            await asyncio.gather(
                *[assessments.submit(caller, request, Budget(10.0)) for request in requests]
            )

    return await per_job(jobs // len(requests) * len(requests), rounds, run_all)


class _Context:
    """The parts of a grpc.aio servicer context the pipeline reads."""

    def __init__(self, token: str) -> None:
        self._metadata = (("authorization", f"Bearer {token}"), ("user-agent", "bench"))

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def code(self) -> None:
        return None

    async def abort_with_status(self, status: Any) -> None:
        raise RuntimeError(status)


class _Details:
    method = "/bench.Probe/Echo"


def _server_layers(auth: AuthInterceptor) -> list[grpc.aio.ServerInterceptor]:
    """``create_server``'s interceptors (tracing off); before ServerPipeline, the four."""
    try:
        from assaylib.pipeline import ServerPipeline
    except ImportError:  # a checkout from before issue 18 part 3, for comparisons
        from assaylib._handlers import DecodeGuardInterceptor
        from assaylib.error_mapping import ErrorMappingInterceptor
        from assaylib.telemetry import RpcMetricsInterceptor

        return [RpcMetricsInterceptor(), ErrorMappingInterceptor(), auth, DecodeGuardInterceptor()]
    return [ServerPipeline(auth)]


async def pipeline(calls: int, rounds: int) -> list[float]:
    """The server pipeline's CPU per unary call (the servicer returns its request)."""
    issuer = Issuer.generate()
    with TemporaryDirectory() as keys:
        jwks = Path(keys) / "jwks.json"
        write_jwks(jwks, [issuer])
        verifier = TokenVerifier(VerifierSettings(), jwks_file=str(jwks))
        await verifier.refresh()
    auth = AuthInterceptor(verifier, AccessTable({"bench.Probe": {"user": ALL}}))

    async def echo(request: bytes, context: Any) -> bytes:
        return request

    layers = _server_layers(auth)
    served: Any = grpc.unary_unary_rpc_method_handler(echo)
    details: Any = _Details()
    context: Any = _Context(issuer.mint("bench-user", ["user"]))

    async def resolve(depth: int, details: Any) -> Any:
        # What grpc.aio does per call: each interceptor's intercept_service, outermost first.
        if depth == len(layers):
            return served
        return await layers[depth].intercept_service(
            lambda inner: resolve(depth + 1, inner), details
        )

    async def run_all() -> None:
        for _ in range(calls):
            await (await resolve(0, details)).unary_unary(b"x", context)

    return await per_job(calls, rounds, run_all)


async def main(jobs: int, rounds: int) -> None:
    """Run the three and print them."""
    for name, measure in (("worker", worker), ("submit", submit), ("pipeline", pipeline)):
        figures = await measure(jobs, rounds)
        print(f"{name:9s} CPU µs per job: " + ", ".join(f"{figure:.0f}" for figure in figures))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    uvloop.run(main(args.jobs, args.rounds))
