"""Caller-supplied strings reach the logs bounded: multi-MiB values in every string field of
the public and archive RPCs, and an oversized token subject, leave no log line over 4 KiB in
either format, and each cut value keeps its full length beside it."""

from __future__ import annotations

import io
import logging
from collections.abc import Awaitable, Callable, Iterator

import grpc
import grpc.aio
import pytest

from archive_svc.app import ArchiveApp
from assay.archive.v1 import archive_service_pb2 as archive_pb
from assay.archive.v1 import archive_service_pb2_grpc as archive_grpc
from assay.assessment.v1 import assessment_service_pb2 as pb
from assaylib.auth import bearer_token_interceptors
from assaylib.logs import JsonFormatter, TextFormatter
from tests.archive.helpers import talent_data
from tests.assessment.conftest import StubFactory, grant
from tests.conftest import ISSUER, token

HUGE = 3 * 1024 * 1024  # under gRPC's 4 MiB message limit, far over any field's
MAX_LINE = 4096


def huge(marker: str) -> str:
    return marker + "x" * (HUGE - len(marker))


@pytest.fixture
def log_lines() -> Iterator[Callable[[], list[str]]]:
    """Every record the services log during the test, rendered by both formatters."""
    streams = {"json": io.StringIO(), "text": io.StringIO()}
    handlers = [
        logging.StreamHandler(streams["json"]),
        logging.StreamHandler(streams["text"]),
    ]
    handlers[0].setFormatter(JsonFormatter("test"))
    handlers[1].setFormatter(TextFormatter("test"))
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.INFO)
    for handler in handlers:
        root.addHandler(handler)
    yield lambda: [line for s in streams.values() for line in s.getvalue().splitlines()]
    for handler in handlers:
        root.removeHandler(handler)
    root.setLevel(level)


async def _refused(call: Awaitable[object]) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as err:
        return err.code()
    return grpc.StatusCode.OK


async def test_huge_strings_leave_short_log_lines(
    client: StubFactory,
    archive: ArchiveApp,
    archive_stub: archive_grpc.ArchiveServiceAsyncStub,
    log_lines: Callable[[], list[str]],
) -> None:
    await grant(archive_stub, "alice", 5)
    user = client("user", "alice")
    caller = client("service", "gateway")
    data = talent_data()
    codes = [
        await _refused(
            user.SubmitAssessment(
                pb.SubmitAssessmentRequest(assessment_data=data, request_id=huge("request-id"))
            )
        ),
        await _refused(
            user.SubmitAssessment(
                pb.SubmitAssessmentRequest(
                    assessment_data=data, assessment_name=huge("assessment-name")
                )
            )
        ),
        await _refused(
            user.SubmitAssessment(
                pb.SubmitAssessmentRequest(assessment_data=data, locale=huge("locale"))
            )
        ),
        await _refused(user.GetJob(pb.GetJobRequest(job_id=huge("get-job")))),
        await _refused(user.GetResult(pb.GetResultRequest(result_id=huge("result-id")))),
        await _refused(user.CancelJob(pb.CancelJobRequest(job_id=huge("cancel-job")))),
        await _refused(user.RetryJob(pb.RetryJobRequest(job_id=huge("retry-job")))),
        await _refused(user.ListJobs(pb.ListJobsRequest(page_token=huge("page-token")))),
        await _refused(caller.ListJobs(pb.ListJobsRequest(user_id=huge("list-user")))),
        await _refused(
            caller.GetTokenBalance(pb.GetTokenBalanceRequest(user_id=huge("balance-user")))
        ),
        # A subject from a token: as long as a token in metadata can be (8 KiB by default).
        await _refused(client("user", "s" * 5000).GetTokenBalance(pb.GetTokenBalanceRequest())),
    ]
    channel = grpc.aio.insecure_channel(
        f"127.0.0.1:{archive.port}", interceptors=bearer_token_interceptors(token("operator"))
    )
    worker = grpc.aio.insecure_channel(
        f"127.0.0.1:{archive.port}",
        interceptors=bearer_token_interceptors(ISSUER.mint("worker", ["service"])),
    )
    try:
        operator = archive_grpc.ArchiveServiceStub(channel)
        codes += [
            await _refused(
                operator.GrantTokens(
                    archive_pb.GrantTokensRequest(
                        user_id=huge("grant-user"), amount=1, reason=huge("grant-reason")
                    )
                )
            ),
            await _refused(
                operator.EraseUserData(
                    archive_pb.EraseUserDataRequest(
                        user_id=huge("erase-user"), request_id=huge("erase-request")
                    )
                )
            ),
            await _refused(
                archive_grpc.ArchiveServiceStub(worker).FailJob(
                    archive_pb.FailJobRequest(
                        job_id=huge("fail-job"),
                        worker_id=huge("worker-id"),
                        attempt=1,
                        error_code="X",
                        error_message=huge("error-message"),
                    )
                )
            ),
        ]
    finally:
        await channel.close()
        await worker.close()

    assert grpc.StatusCode.INTERNAL not in codes and grpc.StatusCode.OK not in codes, codes
    lines = log_lines()
    longest = max(lines, key=len)
    assert len(longest.encode()) <= MAX_LINE, longest[:300]
    # The bound did its work: values were logged, cut, with their full length beside them.
    assert any(f"…[{HUGE} chars]" in line for line in lines), lines[:5]
