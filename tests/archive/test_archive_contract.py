"""The archive's surface: auth rules, bad input refused field by field on every RPC,
the migrated schema equal to the models, and gen/ equal to what protos/ generates."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from google.protobuf.field_mask_pb2 import FieldMask
from sqlalchemy.ext.asyncio import create_async_engine

from archive_svc.models import Base
from assay.archive.v1 import archive_service_pb2 as pb
from assay.archive.v1 import archive_service_pb2_grpc
from assay.common.v1 import assessment_pb2, job_pb2
from assaylib.auth import bearer_token_interceptors
from tests.archive.helpers import expect_error, snapshot, talent_data
from tests.conftest import token

ROOT = Path(__file__).resolve().parents[2]


def bad_scores() -> assessment_pb2.AssessmentData:
    data = talent_data()
    data.riasec.realistic = 101
    data.ocean.ClearField("neuroticism")
    return data


# RPC name → (a bad request, field paths that must be named in the violations).
SAME = "7d1d2a4e-5f0c-4d2b-9e1a-3c4b5d6e7f80"
BAD_REQUESTS: dict[str, tuple[Any, set[str]]] = {
    "CreateSubmission": (
        pb.CreateSubmissionRequest(assessment_data=bad_scores(), assessment_name="Palmistry"),
        {
            "user_id",
            "assessment_name",
            "assessment_data.riasec.realistic",
            "assessment_data.ocean.neuroticism",
        },
    ),
    "GetJob": (pb.GetJobRequest(job_id="not-a-uuid"), {"job_id"}),
    "ListJobs": (pb.ListJobsRequest(page_size=-1), {"page_size"}),
    "GetResult": (pb.GetResultRequest(reader="nobody"), {"result_id"}),
    "ListResults": (pb.ListResultsRequest(page_size=100_000), {"page_size"}),
    "UpdateResult": (
        pb.UpdateResultRequest(
            result=job_pb2.AnalysisResult(result_id="x"), update_mask=FieldMask(paths=["user_id"])
        ),
        {"result.result_id"},
    ),
    "CreateResult": (pb.CreateResultRequest(job_id=""), {"job_id"}),
    "StartJob": (pb.StartJobRequest(job_id="1"), {"job_id", "worker_id"}),
    "Heartbeat": (pb.HeartbeatRequest(job_id="1", worker_id="w"), {"job_id", "attempt"}),
    "CompleteJob": (pb.CompleteJobRequest(worker_id="w", attempt=1), {"job_id", "test_result"}),
    "FailJob": (pb.FailJobRequest(job_id="nope"), {"job_id", "error_code"}),
    "CancelJob": (pb.CancelJobRequest(), {"job_id"}),
    "RetryJob": (pb.RetryJobRequest(job_id="zzz"), {"job_id"}),
    "ListStuckJobs": (pb.ListStuckJobsRequest(), {"stuck_after", "max_processing"}),
    "SweepStuckJobs": (pb.SweepStuckJobsRequest(), {"stuck_after", "max_processing"}),
    "GetTokenBalance": (pb.GetTokenBalanceRequest(), {"user_id"}),
    "GrantTokens": (pb.GrantTokensRequest(user_id="u", amount=0), {"amount"}),
    "SetUserTier": (pb.SetUserTierRequest(tier="gold"), {"user_id", "tier"}),
    "EraseUserData": (pb.EraseUserDataRequest(request_id="r"), {"user_id"}),
    "ListLedgerEntries": (pb.ListLedgerEntriesRequest(page_token="@@@"), {"page_token"}),
    "ListAccessRecords": (pb.ListAccessRecordsRequest(page_token="@@@"), {"page_token"}),
    # A batch's items fail on their own; only the batch itself can be bad as a whole.
    "CreateSubmissions": (
        pb.CreateSubmissionsRequest(submissions=[pb.CreateSubmissionRequest()] * 1001),
        {"submissions"},
    ),
    "StartJobs": (
        pb.StartJobsRequest(starts=[pb.StartJobRequest(job_id=SAME, worker_id="w")] * 2),
        {"job_id"},
    ),
    "ReportJobs": (
        pb.ReportJobsRequest(
            reports=[
                pb.JobReport(cancelled=pb.CancelJobRequest(job_id=SAME, worker_id="w", attempt=1))
            ]
            * 2
        ),
        {"job_id"},
    ),
    "Heartbeats": (
        pb.HeartbeatsRequest(
            heartbeats=[pb.HeartbeatRequest(job_id=SAME, worker_id="w", attempt=1)] * 1001
        ),
        {"heartbeats"},
    ),
    # An imported row is rejected on its own (its outcome); only a batch too big is refused.
    "ImportOriginalJobs": (
        pb.ImportOriginalJobsRequest(jobs=[pb.OriginalJob()] * 1001),
        {"jobs"},
    ),
    "BatchGetImportedJobs": (
        pb.BatchGetImportedJobsRequest(original_job_ids=["j"] * 1001),
        {"original_job_ids"},
    ),
}


def test_every_rpc_has_a_bad_input_case() -> None:
    methods = pb.DESCRIPTOR.services_by_name["ArchiveService"].methods
    rpcs = {m.name for m in methods if m.input_type.fields}  # a request without fields
    assert rpcs == set(BAD_REQUESTS)  # (GetSystemStatus) cannot be bad


@pytest.mark.parametrize("rpc", sorted(BAD_REQUESTS))
async def test_bad_input_is_refused_with_field_violations(
    archive_stub, database: str, rpc: str
) -> None:
    request, fields = BAD_REQUESTS[rpc]
    before = await snapshot(database)
    error = await expect_error(
        getattr(archive_stub, rpc)(request), grpc.StatusCode.INVALID_ARGUMENT
    )
    named = {v.field for v in error.violations} if hasattr(error, "violations") else set()
    assert fields <= named, f"{rpc}: expected violations for {fields}, got {named}"
    assert await snapshot(database) == before


async def test_oversize_submission_is_refused(archive_stub, database: str) -> None:
    raw = assessment_pb2.RawResponses()
    items = raw.responses["essay"].items
    for index in range(1200):
        items.add(question_id=f"q{index}", text_value="x" * 1000)
    request = pb.CreateSubmissionRequest(
        user_id="u", assessment_data=talent_data(), raw_responses=raw
    )
    before = await snapshot(database)
    error = await expect_error(
        archive_stub.CreateSubmission(request), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert "1 MiB" in str(error) or any("1 MiB" in v.description for v in error.violations)
    assert await snapshot(database) == before


async def test_no_token_is_unauthenticated(archive) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{archive.port}") as channel:
        stub = archive_service_pb2_grpc.ArchiveServiceStub(channel)
        await expect_error(
            stub.GetTokenBalance(pb.GetTokenBalanceRequest(user_id="u")),
            grpc.StatusCode.UNAUTHENTICATED,
        )


@pytest.mark.parametrize(
    ("role", "code"),
    [("user", grpc.StatusCode.PERMISSION_DENIED), ("operator", grpc.StatusCode.OK)],
)
async def test_archive_accepts_only_service_and_operator(archive, role, code) -> None:
    interceptors = bearer_token_interceptors(token(role, "someone"))
    async with grpc.aio.insecure_channel(
        f"127.0.0.1:{archive.port}", interceptors=interceptors
    ) as channel:
        call = archive_service_pb2_grpc.ArchiveServiceStub(channel).GetTokenBalance(
            pb.GetTokenBalanceRequest(user_id="someone")
        )
        if code == grpc.StatusCode.OK:
            assert (await call).balance == 0
        else:
            await expect_error(call, code)


async def test_migrated_schema_matches_the_models(database: str) -> None:
    engine = create_async_engine(database)
    try:
        async with engine.connect() as conn:
            diff = await conn.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync), Base.metadata)
            )
    finally:
        await engine.dispose()
    assert diff == [], f"migrations and models differ: {diff}"


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "tools" / "gen_protos.py"), str(tmp_path)],
        check=True,
        capture_output=True,
    )
    stale = _differences(filecmp.dircmp(ROOT / "gen" / "assay", tmp_path / "assay"))
    assert not stale, f"gen/ is stale; run `make gen`: {stale}"


def _differences(cmp: filecmp.dircmp[str]) -> list[str]:
    ignored = {"__pycache__"}
    found = [f for f in cmp.left_only + cmp.right_only if f not in ignored]
    _, mismatch, errors = filecmp.cmpfiles(cmp.left, cmp.right, cmp.common_files, shallow=False)
    found += mismatch + errors
    for sub in cmp.subdirs.values():
        found += _differences(sub)
    return found
