"""The assessment service as a process and as a client of the archive: an archive that is
down → UNAVAILABLE, deadlines carried to the archive, the entry point, logs and SIGTERM."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from archive_svc.app import ArchiveApp
from assay.archive.v1 import archive_service_pb2 as archive_pb
from assay.archive.v1 import archive_service_pb2_grpc as archive_grpc
from assay.assessment.v1 import assessment_service_pb2 as pb
from assay.assessment.v1 import assessment_service_pb2_grpc as pb_grpc
from assay.common.v1 import job_pb2
from assaylib.auth import AuthInterceptor, bearer_token_interceptors
from assaylib.config import Settings
from assaylib.embedded import free_port
from assaylib.issuer import Issuer, write_jwks
from assaylib.keys import TokenVerifier, VerifierSettings
from assessment_svc.app import AssessmentApp
from assessment_svc.archive_client import DEFAULT_TIMEOUT
from tests.archive.helpers import expect_error, snapshot
from tests.assessment.conftest import grant, submission
from tests.conftest import Trust, token

REPO = Path(__file__).resolve().parents[2]
JOB_ID = "7f4b3c2a-1d2e-4f50-8a9b-0c1d2e3f4a5b"


@dataclasses.dataclass
class Running:
    app: AssessmentApp
    stub: pb_grpc.AssessmentServiceAsyncStub


@dataclasses.dataclass
class FakeArchive(archive_grpc.ArchiveServiceServicer):
    """A stand-in archive peer that records the deadline it was called with."""

    remaining: list[float | None] = dataclasses.field(default_factory=list)
    hang: bool = False
    cancelled: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)

    async def GetJob(self, request: archive_pb.GetJobRequest, context) -> archive_pb.GetJobResponse:
        self.remaining.append(context.time_remaining())
        if self.hang:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
        return archive_pb.GetJobResponse(job=job_pb2.Job(job_id=request.job_id, user_id="alice"))


async def start_assessment(settings: Settings, archive_addr: str) -> Running:
    app = await AssessmentApp.start(
        dataclasses.replace(settings, archive_addr=archive_addr), "127.0.0.1:0"
    )
    channel = grpc.aio.insecure_channel(
        f"127.0.0.1:{app.port}", interceptors=bearer_token_interceptors(token("user", "alice"))
    )
    return Running(app, pb_grpc.AssessmentServiceStub(channel))


@pytest.fixture
async def fake_archive(settings: Settings) -> AsyncIterator[tuple[FakeArchive, Running]]:
    fake = FakeArchive()  # type: ignore[abstract]  # only GetJob is called
    server = grpc.aio.server()
    archive_grpc.add_ArchiveServiceServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    running = await start_assessment(settings, f"127.0.0.1:{port}")
    yield fake, running
    await running.app.stop(grace=0.5)
    await server.stop(0)


async def test_archive_down_is_unavailable(settings: Settings) -> None:
    archive = await ArchiveApp.start(settings, "127.0.0.1:0")
    running = await start_assessment(settings, f"127.0.0.1:{archive.port}")
    try:
        await archive.archive.tokens.grant(
            archive_pb.GrantTokensRequest(user_id="alice", amount=1, reason="t")
        )
        job = (await running.stub.SubmitAssessment(submission())).job
        await archive.stop(grace=0.5)
        before = await snapshot(settings.database_url)

        for call in (
            running.stub.GetJob(pb.GetJobRequest(job_id=job.job_id)),
            running.stub.SubmitAssessment(submission()),
            running.stub.ListJobs(pb.ListJobsRequest()),
            running.stub.GetTokenBalance(pb.GetTokenBalanceRequest()),
        ):
            error = await expect_error(call, grpc.StatusCode.UNAVAILABLE, "UNAVAILABLE")
            assert "127.0.0.1" not in error.message  # the archive's address stays inside
        assert await snapshot(settings.database_url) == before
    finally:
        await running.app.stop(grace=0.5)


async def test_archive_never_reachable_is_unavailable(settings: Settings) -> None:
    running = await start_assessment(settings, f"127.0.0.1:{free_port()}")
    try:
        await expect_error(running.stub.SubmitAssessment(submission()), grpc.StatusCode.UNAVAILABLE)
        # Validation still answers without the archive.
        await expect_error(
            running.stub.SubmitAssessment(submission(assessment_name="nope")),
            grpc.StatusCode.INVALID_ARGUMENT,
        )
    finally:
        await running.app.stop(grace=0.5)


async def test_caller_deadline_reaches_the_archive(fake_archive) -> None:
    fake, running = fake_archive
    await running.stub.GetJob(pb.GetJobRequest(job_id=JOB_ID), timeout=3.0)
    await running.stub.GetJob(pb.GetJobRequest(job_id=JOB_ID))
    with_deadline, without = fake.remaining
    # The grpc-timeout header is coarse: it may round up by a fraction of a second.
    assert with_deadline is not None and 1.0 < with_deadline <= 3.0 + 0.5
    assert without is not None and DEFAULT_TIMEOUT - 2 < without <= DEFAULT_TIMEOUT + 0.5


async def test_expired_deadline_cancels_the_archive_call(fake_archive) -> None:
    fake, running = fake_archive
    fake.hang = True
    await expect_error(
        running.stub.GetJob(pb.GetJobRequest(job_id=JOB_ID), timeout=0.5),
        grpc.StatusCode.DEADLINE_EXCEEDED,
    )
    await asyncio.wait_for(fake.cancelled.wait(), timeout=5.0)


async def test_archive_refusing_our_credentials_is_internal(
    settings: Settings, tmp_path: Path
) -> None:
    # An archive trusting another issuer: the caller's token is fine, ours is not.
    write_jwks(tmp_path / "jwks.json", [Issuer.generate()])
    verifier = TokenVerifier(VerifierSettings(), jwks_file=str(tmp_path / "jwks.json"))
    server = grpc.aio.server(interceptors=[AuthInterceptor(verifier)])
    archive_grpc.add_ArchiveServiceServicer_to_server(FakeArchive(), server)  # type: ignore[abstract]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    running = await start_assessment(settings, f"127.0.0.1:{port}")
    try:
        await expect_error(
            running.stub.GetJob(pb.GetJobRequest(job_id=JOB_ID)), grpc.StatusCode.INTERNAL
        )
    finally:
        await running.app.stop(grace=0.5)
        await server.stop(0)


async def test_logs_name_the_job(client, archive_stub, caplog) -> None:
    await grant(archive_stub, "alice", 1)
    with caplog.at_level(logging.INFO, logger="assessment_svc"):
        job = (await client("user", "alice").SubmitAssessment(submission())).job
    assert any(getattr(r, "job_id", None) == job.job_id for r in caplog.records)


def process_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASSAY_")}
    env.update(extra)
    return env


async def test_bad_configuration_exits_2_with_one_line() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "assessment_svc",
        cwd=REPO,
        env=process_env(ASSAY_TOKEN_COST="lots"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 2
    lines = stderr.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("assessment: invalid configuration")
    assert "ASSAY_JWKS_FILE" in lines[0] and "ASSAY_TOKEN_COST" in lines[0]


async def wait_serving(port: int, within: float = 30.0) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest(service="assay.assessment.v1.AssessmentService")
        reply = await health.Check(request, wait_for_ready=True, timeout=within)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_process_serves_and_stops_on_sigterm(archive, archive_stub, trust: Trust) -> None:
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "assessment_svc",
        cwd=REPO,
        env=process_env(
            **trust.env(),
            ASSAY_ASSESSMENT_ADDR=f"127.0.0.1:{port}",
            ASSAY_ARCHIVE_ADDR=f"127.0.0.1:{archive.port}",
            ASSAY_SHUTDOWN_GRACE="2s",
        ),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await wait_serving(port)
        await grant(archive_stub, "alice", 1)
        async with grpc.aio.insecure_channel(
            f"127.0.0.1:{port}", interceptors=bearer_token_interceptors(token("user", "alice"))
        ) as channel:
            reply = await pb_grpc.AssessmentServiceStub(channel).SubmitAssessment(submission())
        assert reply.job.status == job_pb2.JOB_STATUS_QUEUED
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=15)
        assert process.returncode == 0, stderr.decode()
        assert reply.job.job_id in stderr.decode()  # the submission was logged with its job
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
