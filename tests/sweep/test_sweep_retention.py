"""ASSAY_RESULT_RETENTION: the sweep's retention pass erases the inputs and profiles of exactly
the terminal jobs that ended longer ago than the retention, and nothing else; `assay status`
shows the oldest result still kept."""

from __future__ import annotations

import datetime as dt
import uuid

import asyncpg
import grpc

from assay.archive.v1 import archive_service_pb2 as pb
from assay.common.v1 import job_pb2
from tests.archive.helpers import Client, check_invariants, dsn, expect_error
from tests.sweep.test_sweep_command import run_sweep

HOUR = 3600.0


async def age(database: str, job: job_pb2.Job, hours: float) -> None:
    """Move a job (its creation, start and end) and its result row ``hours`` into the past."""
    conn = await asyncpg.connect(dsn(database))
    try:
        shift = dt.timedelta(hours=hours)
        await conn.execute(
            "UPDATE jobs SET created_at = created_at - $2::interval,"
            " updated_at = updated_at - $2::interval, started_at = started_at - $2::interval,"
            " heartbeat_at = heartbeat_at - $2::interval,"
            " finished_at = finished_at - $2::interval WHERE job_id = $1",
            uuid.UUID(job.job_id),
            shift,
        )
        await conn.execute(
            "UPDATE results SET created_at = created_at - $2::interval WHERE result_id = $1",
            uuid.UUID(job.result_id),
            shift,
        )
    finally:
        await conn.close()


async def kept_results(database: str) -> set[str]:
    conn = await asyncpg.connect(dsn(database))
    try:
        rows = await conn.fetch("SELECT result_id FROM results WHERE erased_at IS NULL")
        return {str(r["result_id"]) for r in rows}
    finally:
        await conn.close()


async def old_and_new_jobs(client: Client, database: str) -> dict[str, job_pb2.Job]:
    """Jobs in every status, each an old one (two days) and a recent one."""
    await client.grant("alice", 40)
    jobs: dict[str, job_pb2.Job] = {}
    for when, hours in (("old", 48.0), ("new", 0.0)):
        jobs[f"{when}_queued"] = await client.submit()
        jobs[f"{when}_processing"] = await client.start(await client.submit())
        jobs[f"{when}_completed"] = await client.complete(await client.start(await client.submit()))
        jobs[f"{when}_failed"] = await client.fail(await client.start(await client.submit()))
        jobs[f"{when}_cancelled"] = await client.cancel(await client.submit())
        for name in [n for n in jobs if n.startswith(when)]:
            await age(database, jobs[name], hours)
    return jobs


def sweep_request(retention: float, limit: int = 0) -> pb.SweepStuckJobsRequest:
    request = pb.SweepStuckJobsRequest(limit=limit)
    request.stuck_after.FromSeconds(10 * 86400)  # old PROCESSING jobs are not the point here
    request.max_processing.FromSeconds(10 * 86400)
    request.result_retention.FromSeconds(int(retention))
    return request


async def test_retention_erases_exactly_the_old_terminal_results(archive_stub, database) -> None:
    client = Client(archive_stub)
    jobs = await old_and_new_jobs(client, database)
    old_terminal = {
        jobs[f"old_{status}"].result_id for status in ("completed", "failed", "cancelled")
    }
    everything = {job.result_id for job in jobs.values()}

    reply = await archive_stub.SweepStuckJobs(sweep_request(24 * HOUR, limit=2))  # 2 batches

    assert reply.results_expired == 3
    assert await kept_results(database) == everything - old_terminal
    for result_id in old_terminal:
        await expect_error(
            archive_stub.GetResult(pb.GetResultRequest(result_id=result_id)),
            grpc.StatusCode.NOT_FOUND,
            "ERASED",
        )
    for name in ("old_queued", "old_processing", "new_completed"):
        kept = await archive_stub.GetResult(pb.GetResultRequest(result_id=jobs[name].result_id))
        assert kept.result.HasField("test_data")
    # Jobs and the ledger are untouched: no transition, no refund.
    for job in jobs.values():
        assert (await client.get(job.job_id)).version == job.version
    await check_invariants(database)
    # The erasure log records the pass; a second sweep finds nothing more.
    conn = await asyncpg.connect(dsn(database))
    try:
        log = await conn.fetch("SELECT * FROM erasures")
        queue_rows = await conn.fetchval(
            "SELECT count(*) FROM outbox WHERE kind = 'job' AND job_id = ANY($1::uuid[])",
            [uuid.UUID(jobs[f"old_{s}"].job_id) for s in ("completed", "failed", "cancelled")],
        )
    finally:
        await conn.close()
    assert [(r["trigger"], r["user_id"], r["results_erased"]) for r in log] == [
        ("retention", None, 3)
    ]
    assert log[0]["finished_at"] is not None and log[0]["requested_by"] == "operator-1"
    assert queue_rows == 0  # their queue messages (which held the data) left the outbox
    again = await archive_stub.SweepStuckJobs(sweep_request(24 * HOUR))
    assert again.results_expired == 0
    # `assay status`: the oldest kept result is the old QUEUED job's (submitted 48 h ago).
    status = await archive_stub.GetSystemStatus(pb.GetSystemStatusRequest())
    oldest = status.oldest_retained_result.ToDatetime(tzinfo=dt.UTC)
    assert dt.timedelta(hours=47) < dt.datetime.now(dt.UTC) - oldest < dt.timedelta(hours=49)


async def test_retention_is_off_by_default_and_a_dry_run_erases_nothing(
    archive_stub, database
) -> None:
    client = Client(archive_stub)
    jobs = await old_and_new_jobs(client, database)
    everything = {job.result_id for job in jobs.values()}
    off = await archive_stub.SweepStuckJobs(sweep_request(0))
    dry = sweep_request(HOUR)
    dry.dry_run = True
    await archive_stub.SweepStuckJobs(dry)
    assert off.results_expired == 0 and await kept_results(database) == everything
    await expect_error(
        archive_stub.SweepStuckJobs(sweep_request(-1)), grpc.StatusCode.INVALID_ARGUMENT
    )


async def test_the_sweep_command_applies_assay_result_retention(
    archive, archive_stub, database, settings
) -> None:
    client = Client(archive_stub)
    jobs = await old_and_new_jobs(client, database)

    code, summary, said = await run_sweep(
        settings, archive.port, env={"ASSAY_RESULT_RETENTION": "1d"}
    )

    assert code == 0 and summary["results_expired"] == 3, said
    assert "3 result(s) past retention erased" in said
    assert len(await kept_results(database)) == len(jobs) - 3
    await check_invariants(database)
