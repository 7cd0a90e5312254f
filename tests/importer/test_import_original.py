"""`assay import original`: the original system's jobs, results and balances brought across
through the archive's rules — found by their original ids, their profiles as the original
wrote them, every imported user's ledger summing to their balance — and a second run imports
nothing twice."""

from __future__ import annotations

import datetime as dt
import json
import random
import uuid
from collections import Counter

import asyncpg
from google.protobuf import json_format

from archive_svc import inputs
from assay.archive.v1 import archive_service_pb2 as pb
from assay.common.v1 import assessment_pb2, job_pb2
from assaylib.original import ORIGINAL_JOB_NAMESPACE
from bench import original_source
from tests.archive.helpers import check_invariants, dsn, queue_message_row
from tests.importer.conftest import Importer, Original, fill

JOB_ID, STATUS, RESULT_ID = 1, 3, 4  # columns of original_source.COLUMNS["analysis_jobs"]


def first(rows: original_source.Rows, status: str) -> tuple[object, ...]:
    return next(job for job in rows.jobs if job[STATUS] == status)


def result_of(rows: original_source.Rows, job: tuple[object, ...]) -> tuple[object, ...]:
    return next(result for result in rows.results if result[0] == job[RESULT_ID])


async def ledger(database: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn(database))
    try:
        rows: list[asyncpg.Record] = await conn.fetch(
            "SELECT user_id, kind::text, amount, job_id, reason FROM ledger_entries"
            " ORDER BY entry_id"
        )
        return rows
    finally:
        await conn.close()


async def test_import_brings_jobs_results_and_balances_across(
    importer: Importer, original: Original, archive_stub, database: str
) -> None:
    rows = original_source.generate(jobs=80, users=9, seed=3)
    urgent = next(n for n, job in enumerate(rows.jobs) if job[STATUS] in ("queued", "processing"))
    priority = original_source.COLUMNS["analysis_jobs"].index("priority")
    rows.jobs[urgent] = (*rows.jobs[urgent][:priority], 1, *rows.jobs[urgent][priority + 1 :])
    await fill(original, rows)

    ran = await importer.run("--json")
    assert ran.code == 0, ran.describe()
    report = ran.json()
    for status, n in Counter(job[STATUS] for job in rows.jobs).items():
        counts = report["jobs"][status]
        assert counts["read"] == counts["imported"] == n, report
        assert counts["rejected"] == counts["skipped"] == 0
    source_sum = sum(user[3] for user in rows.users)
    assert report["source_balance_sum"] == report["assay_balance_sum"] == source_sum
    assert report["users"]["imported"] == 9
    await check_invariants(database)  # I1 (ledgers sum, each in-flight charge debited), I2

    # A completed job and its result, found by their original ids, the profile whole.
    done = first(rows, "completed")
    job = (await archive_stub.GetJob(pb.GetJobRequest(job_id=str(done[JOB_ID])))).job
    assert job.status == job_pb2.JOB_STATUS_COMPLETED and job.result_id == str(done[RESULT_ID])
    assert job.charge_count == 0 and job.version == 0  # charged in the original, no event here
    got = await archive_stub.GetResult(pb.GetResultRequest(result_id=str(done[RESULT_ID])))
    source = result_of(rows, done)
    assert json_format.MessageToDict(got.result.test_result) == json.loads(str(source[3]))
    assert (
        got.result.test_data.via_is.love_of_learning
        == json.loads(str(source[2]))["viaIs"]["loveOfLearning"]
    )

    # A failed job keeps its error; a job in flight is queued again without a new charge.
    failed = first(rows, "failed")
    job = (await archive_stub.GetJob(pb.GetJobRequest(job_id=str(failed[JOB_ID])))).job
    assert job.status == job_pb2.JOB_STATUS_FAILED and job.error_message == failed[5]
    in_flight = next(job for job in rows.jobs if job[STATUS] in ("queued", "processing"))
    job = (await archive_stub.GetJob(pb.GetJobRequest(job_id=str(in_flight[JOB_ID])))).job
    assert job.status == job_pb2.JOB_STATUS_QUEUED and job.charge_count == 1
    assert job.priority == 1  # the original's priority is the job's lane
    message = await queue_message_row(database, job.job_id)
    data = inputs.parse_into(message["test_data"], assessment_pb2.AssessmentData())
    assert (
        data.riasec.realistic
        == json.loads(str(result_of(rows, in_flight)[2]))["riasec"]["realistic"]
    )
    balance = await archive_stub.GetTokenBalance(pb.GetTokenBalanceRequest(user_id=job.user_id))
    user_row = next(user for user in rows.users if str(user[0]) == job.user_id)
    assert balance.balance == user_row[3]  # the original's balance: nothing charged again

    again = await importer.run("--json")
    assert again.code == 0, again.describe()
    totals = again.json()["jobs"]
    assert sum(c["imported"] for c in totals.values()) == 0
    assert sum(c["skipped"] for c in totals.values()) == 80
    assert again.json()["users"]["skipped"] == 9
    await check_invariants(database)

    verified = await importer.run("--verify", "--json")
    assert verified.code == 0, verified.describe()
    assert verified.json()["differences"] == [] and verified.json()["jobs_compared"] == 80


async def test_dry_run_writes_nothing(
    importer: Importer, original: Original, database: str
) -> None:
    await fill(original, original_source.generate(jobs=20, users=3, seed=4))
    ran = await importer.run("--dry-run", "--json")
    assert ran.code == 0, ran.describe()
    assert sum(c["imported"] for c in ran.json()["jobs"].values()) == 20
    told = await importer.run("--dry-run")  # for a person: a table per status, the balances
    assert told.code == 0, told.describe()
    assert "IMPORTED" in told.stdout and "balances: source" in told.stdout, told.stdout
    conn = await asyncpg.connect(dsn(database))
    try:
        assert await conn.fetchval("SELECT count(*) FROM jobs") == 0
        assert await conn.fetchval("SELECT count(*) FROM ledger_entries") == 0
    finally:
        await conn.close()


async def test_in_flight_fail_refunds_with_an_event(
    importer: Importer, original: Original, archive_stub, database: str
) -> None:
    rows = original_source.generate(jobs=40, users=4, seed=5)
    await fill(original, rows)
    ran = await importer.run("--in-flight", "fail", "--json")
    assert ran.code == 0, ran.describe()
    in_flight = [job for job in rows.jobs if job[STATUS] in ("queued", "processing")]
    assert in_flight and ran.json()["refunded_at_cut_over"] == len(in_flight)
    job = (await archive_stub.GetJob(pb.GetJobRequest(job_id=str(in_flight[0][JOB_ID])))).job
    assert job.status == job_pb2.JOB_STATUS_FAILED and job.error_code == "CUT_OVER"
    assert job.version == 1  # its analysis.failed event (I2 checked below)
    source_sum = sum(user[3] for user in rows.users)
    assert ran.json()["assay_balance_sum"] == source_sum + len(in_flight)
    await check_invariants(database)
    kinds = Counter(entry["kind"] for entry in await ledger(database) if entry["job_id"])
    assert kinds == {"DEBIT": len(in_flight), "REFUND": len(in_flight)}


async def test_since_brings_the_second_pass(
    importer: Importer, original: Original, archive_stub, database: str
) -> None:
    rows = original_source.generate(jobs=30, users=3, seed=6)
    await fill(original, rows)
    first_pass = await importer.run("--in-flight", "leave", "--json")
    assert first_pass.code == 0, first_pass.describe()
    left = sum(c["left"] for c in first_pass.json()["jobs"].values())
    assert left == sum(1 for job in rows.jobs if job[STATUS] in ("queued", "processing"))

    # The original serves on: a new job, a balance spent, then it stops.
    later = original_source.Rows()
    rng = random.Random(7)
    richest = max(rows.users, key=lambda user: int(str(user[3])))
    user = richest[0]
    new_id, _ = original_source.add_job(
        later, rng, user, "completed", rows.jobs[-1][7] + dt.timedelta(hours=1)
    )
    await original_source.load(original.dsn, later)
    spent = int(str(richest[3])) - 1
    assert spent >= 0
    await original.execute("UPDATE auth.users SET token_balance = $2 WHERE id = $1", user, spent)
    cut = (rows.jobs[-1][7] + dt.timedelta(minutes=30)).isoformat()

    second = await importer.run("--since", cut, "--json")
    assert second.code == 0, second.describe()
    counts = second.json()["jobs"]
    assert counts["completed"]["imported"] == 1 and counts["completed"]["read"] == 1
    assert sum(counts[s]["imported"] for s in ("queued", "processing") if s in counts) == left
    assert (await archive_stub.GetJob(pb.GetJobRequest(job_id=new_id))).job.job_id == new_id
    balance = await archive_stub.GetTokenBalance(pb.GetTokenBalanceRequest(user_id=str(user)))
    assert balance.balance == spent
    corrections = [e for e in await ledger(database) if "correction" in e["reason"]]
    assert [(e["user_id"], e["amount"]) for e in corrections] == [(str(user), -1)]
    await check_invariants(database)
    verified = await importer.run("--verify", "--json")
    assert verified.json()["differences"] == [], verified.describe()


async def test_a_job_id_that_is_no_uuid_maps_to_uuid5(
    importer: Importer, original: Original, archive_stub
) -> None:
    rows = original_source.Rows()
    rng = random.Random(8)
    user = uuid.uuid4()
    rows.users.append(
        (
            user,
            "a@example.id",
            "x",
            3,
            dt.datetime.now(dt.UTC),
            dt.datetime.now(dt.UTC),
        )
    )
    original_source.add_job(rows, rng, user, "completed", rows.users[0][4], "job-0042")
    await fill(original, rows)
    ran = await importer.run("--json")
    assert ran.code == 0, ran.describe()
    mapped = str(uuid.uuid5(ORIGINAL_JOB_NAMESPACE, "job-0042"))
    job = (await archive_stub.GetJob(pb.GetJobRequest(job_id=mapped))).job
    assert job.status == job_pb2.JOB_STATUS_COMPLETED
    got = await archive_stub.BatchGetImportedJobs(
        pb.BatchGetImportedJobsRequest(original_job_ids=["job-0042"])
    )
    assert got.jobs[0].job.job_id == mapped
