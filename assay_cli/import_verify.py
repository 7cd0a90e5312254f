"""``assay import original --verify``: the source and Assay compared row by row — every
user's balance, every job's ids, status, error and result, the bytes of its assessment data and
its profile — and every difference listed. Writes nothing."""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import asyncpg

from assay.archive.v1 import archive_service_pb2 as archive_pb
from assay_cli import output
from assay_cli.import_report import Progress
from assay_cli.original import Source, test_data_digest
from assaylib.jobs import status_name
from assaylib.original import original_job_uuid, profile_digest

if TYPE_CHECKING:
    from assay.archive.v1.archive_service_pb2_grpc import ArchiveServiceAsyncStub

PAGE = 1000
RPC_TIMEOUT = 120.0
IMPORTED_STATUS = {"completed": "COMPLETED", "failed": "FAILED"}


@dataclass
class Comparison:
    """What the verify pass found."""

    users: int = 0
    jobs: int = 0
    source_balance_sum: int = 0
    assay_balance_sum: int = 0
    differences: list[dict[str, str]] = field(default_factory=list)

    def differ(self, kind: str, ident: str, what: str, source: Any, assay: Any) -> None:
        """Record one difference."""
        self.differences.append(
            {"kind": kind, "id": ident, "field": what, "source": str(source), "assay": str(assay)}
        )


async def _imported(
    stub: ArchiveServiceAsyncStub, job_ids: Sequence[str] = (), user_ids: Sequence[str] = ()
) -> archive_pb.BatchGetImportedJobsResponse:
    request = archive_pb.BatchGetImportedJobsRequest(
        original_job_ids=list(job_ids), user_ids=list(user_ids)
    )
    reply: archive_pb.BatchGetImportedJobsResponse = await stub.BatchGetImportedJobs(
        request, timeout=RPC_TIMEOUT
    )
    return reply


async def assay_balance_sum(source: Source, stub: ArchiveServiceAsyncStub) -> int:
    """The sum of the Assay balances of the source's users that were imported."""
    total, after = 0, None
    while rows := await source.users_page(after, PAGE):
        reply = await _imported(stub, user_ids=[row["id"] for row in rows])
        total += sum(balance.balance for balance in reply.balances)
        after = rows[-1]["id"]
    return total


async def verify(args: argparse.Namespace, source: Source, stub: ArchiveServiceAsyncStub) -> int:
    """Compare, print every difference; 1 when there is any."""
    found = Comparison()
    await _users(source, stub, found)
    await _jobs(args, source, stub, found)
    if args.json:
        output.print_json(
            {
                "users_compared": found.users,
                "jobs_compared": found.jobs,
                "source_balance_sum": found.source_balance_sum,
                "assay_balance_sum": found.assay_balance_sum,
                "differences": found.differences,
            }
        )
    else:
        for d in found.differences:
            print(f"{d['kind']} {d['id']}: {d['field']}: source {d['source']}, Assay {d['assay']}")
        print(
            f"compared {found.users:,} users and {found.jobs:,} jobs:"
            f" {len(found.differences):,} difference(s); balances: source"
            f" {found.source_balance_sum:,}, Assay {found.assay_balance_sum:,}"
        )
    return 1 if found.differences else 0


async def _users(source: Source, stub: ArchiveServiceAsyncStub, found: Comparison) -> None:
    after = None
    while rows := await source.users_page(after, PAGE):
        reply = await _imported(stub, user_ids=[row["id"] for row in rows])
        assay = {balance.user_id: balance for balance in reply.balances}
        for row in rows:
            found.users += 1
            found.source_balance_sum += int(row["token_balance"])
            balance = assay.get(row["id"])
            if balance is None:
                found.differ("user", row["id"], "balance", row["token_balance"], "not imported")
                continue
            found.assay_balance_sum += balance.balance
            if balance.original_balance != row["token_balance"]:
                found.differ(
                    "user", row["id"], "balance", row["token_balance"], balance.original_balance
                )
        after = rows[-1]["id"]


async def _jobs(
    args: argparse.Namespace, source: Source, stub: ArchiveServiceAsyncStub, found: Comparison
) -> None:
    progress = Progress(
        sum((await source.count_jobs(args.since)).values()), "verify", not args.json
    )
    after = None
    pending: tuple[Sequence[asyncpg.Record], asyncio.Task[Any]] | None = None
    # The archive looks a page up while the one before is compared here.
    while rows := await source.jobs_page(after, args.since, PAGE):
        lookup = asyncio.create_task(_imported(stub, job_ids=[row["job_id"] for row in rows]))
        if pending is not None:
            await _compare_page(*pending, found, progress)
        pending = (rows, lookup)
        after = (rows[-1]["created_at"], rows[-1]["job_id"])
    if pending is not None:
        await _compare_page(*pending, found, progress)
    progress.end()


async def _compare_page(
    rows: Sequence[asyncpg.Record], lookup: asyncio.Task[Any], found: Comparison, progress: Progress
) -> None:
    reply: archive_pb.BatchGetImportedJobsResponse = await lookup
    assay = {job.original_job_id: job for job in reply.jobs}
    for row in rows:
        found.jobs += 1
        _compare(row, assay.get(row["job_id"]), found)
    progress.advance(len(rows))


def _compare(
    row: asyncpg.Record, imported: archive_pb.ImportedJob | None, found: Comparison
) -> None:
    ident = row["job_id"]
    if imported is None:
        found.differ("job", ident, "job", row["status"], "not imported")
        return
    job = imported.job
    expected = {
        "job_id": str(original_job_uuid(ident)),
        "user_id": row["user_id"],
        "original_status": row["status"],
        "result_id": (row["result_id"] or "").lower(),
    }
    actual = {
        "job_id": job.job_id,
        "user_id": job.user_id,
        "original_status": imported.original_status,
        "result_id": job.result_id,
    }
    if job.version == 0:  # untouched in Assay since the import
        expected["status"] = IMPORTED_STATUS.get(row["status"], "")
        actual["status"] = status_name(job.status)
        if row["status"] == "failed":
            expected["error_message"] = row["error_message"] or ""
            actual["error_message"] = job.error_message
    if row["r_id"] is not None:
        expected["test_data_sha256"] = test_data_digest(row["assessment_data"])
        actual["test_data_sha256"] = imported.test_data_sha256
        profile = row["persona_profile"]
        if profile is not None:  # none in flight: Assay's own analysis writes it later
            expected["profile_sha256"] = profile_digest(json.loads(profile))
            actual["profile_sha256"] = imported.profile_sha256
    for name, value in expected.items():
        if actual[name] != value:
            found.differ("job", ident, name, value, actual[name])
