"""`python -m bench.erasure`: how long erasing personal data takes (issue 20).

    python -m bench.erasure --finished 2000 --queued 200 --expired 20000

1. One user with ``--finished`` COMPLETED jobs (made directly in the database, results
   holding a Talent Mapping payload) and ``--queued`` QUEUED ones submitted through the
   archive, their messages left on the jobs stream (the worker is stopped): one
   ``EraseUserData``, timed, with its counts.
2. ``--expired`` terminal jobs of many users that ended two days ago: sweeps with a one-day
   ``result_retention`` until one erases nothing, timed.

The jobs made in the database have no events, so this scenario does not audit; the tests
check the invariants around erasures.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
from typing import Any

import asyncpg

from archive_svc import inputs, profiles
from assay.archive.v1 import archive_service_pb2 as archive_pb
from assay.common.v1 import assessment_pb2
from assaylib.validation import score_fields
from bench import environment
from bench.report import emit, progress
from bench.stack import BenchStack, running_stack

USER = "erase-me"
PAYLOAD = inputs.encode(
    assessment_pb2.AssessmentData(
        riasec=assessment_pb2.Riasec(realistic=42, investigative=88, artistic=71, social=55),
        ocean=assessment_pb2.Ocean(openness=86, conscientiousness=68, extraversion=44),
        via_is=assessment_pb2.ViaIs(creativity=60, curiosity=60, judgment=60, hope=60),
    )
)
PROFILE = profiles.encode(
    assessment_pb2.PersonaProfile(
        archetype="The Bench", short_summary="a stored profile, as the archive writes one"
    )
)
FINISHED_SQL = """
WITH accounts AS (
  INSERT INTO token_accounts (user_id, balance)
  SELECT DISTINCT $2 || CASE WHEN $4 THEN '-' || (n % 100) ELSE '' END, 0
  FROM generate_series(1, $1) AS n ON CONFLICT (user_id) DO NOTHING
), made AS (
  SELECT gen_random_uuid() AS job_id, gen_random_uuid() AS result_id, n
  FROM generate_series(1, $1) AS n
), jobs AS (
  INSERT INTO jobs (job_id, user_id, result_id, assessment_name, status, attempt, worker_id,
                    version, token_cost, started_at, finished_at, created_at, updated_at)
  SELECT job_id, $2 || CASE WHEN $4 THEN '-' || (n % 100) ELSE '' END, result_id,
         'AI-Driven Talent Mapping', 'COMPLETED', 1, 'bench', 3, 1,
         ended.at, ended.at, ended.at, ended.at
  FROM made, (SELECT now() - make_interval(hours => $3) AS at) ended
  RETURNING job_id, user_id, result_id, created_at
), results AS (
  INSERT INTO results (result_id, job_id, user_id, assessment_name, test_data, raw_responses,
                       test_result, created_at)
  SELECT result_id, job_id, user_id, 'AI-Driven Talent Mapping', $5::bytea, ''::bytea,
         $6::bytea, created_at FROM jobs
)
INSERT INTO ledger_entries (user_id, kind, amount, job_id, charge_no, reason)
SELECT user_id, 'DEBIT', -1, job_id, 1, 'bench' FROM jobs
"""
GRANTS_SQL = """
INSERT INTO ledger_entries (user_id, kind, amount, reason)
SELECT user_id, 'GRANT', count(*), 'bench' FROM ledger_entries
WHERE kind = 'DEBIT' AND reason = 'bench' GROUP BY user_id;
UPDATE token_accounts a SET balance = s.total FROM (SELECT user_id, sum(amount) AS total
FROM ledger_entries GROUP BY user_id) s WHERE a.user_id = s.user_id;
"""


async def make_finished(dsn: str, count: int, user: str, hours: int, many_users: bool) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(FINISHED_SQL, count, user, hours, many_users, PAYLOAD, PROFILE)
    finally:
        await conn.close()


async def grant_debited(dsn: str) -> None:
    """Grants that make every made-up user's balance the sum of their ledger (I1)."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(GRANTS_SQL)
    finally:
        await conn.close()


async def unsent(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(
            await conn.fetchval("SELECT count(*) FROM outbox WHERE NOT outbox_published(txid, seq)")
        )
    finally:
        await conn.close()


async def submit_queued(stack: BenchStack, count: int) -> None:
    await stack.grant([USER], count)
    channel, archive = stack.archive()
    async with channel:
        for start in range(0, count, 500):
            batch = [
                archive_pb.CreateSubmissionRequest(user_id=USER)
                for _ in range(min(500, count - start))
            ]
            for request in batch:
                for group in ("riasec", "ocean", "via_is"):
                    scores = getattr(request.assessment_data, group)
                    for name in score_fields(scores):
                        setattr(scores, name, 50)
            await archive.CreateSubmissions(archive_pb.CreateSubmissionsRequest(submissions=batch))


async def measure(stack: BenchStack, args: argparse.Namespace) -> dict[str, Any]:
    dsn = stack.dsn
    progress(f"making {args.finished} finished and {args.queued} queued jobs of one user")
    await make_finished(dsn, args.finished, USER, 1, False)
    await submit_queued(stack, args.queued)
    await make_finished(dsn, args.expired, "old", 48, True)
    await grant_debited(dsn)
    for _ in range(600):  # every queue message on the jobs stream before the erasure
        if not await unsent(dsn):
            break
        await asyncio.sleep(0.1)
    channel, archive = stack.archive()
    async with channel:
        progress("erasing the user")
        started = time.perf_counter()
        erased = await archive.EraseUserData(
            archive_pb.EraseUserDataRequest(user_id=USER, request_id="bench"), timeout=900
        )
        erase_seconds = time.perf_counter() - started
        progress(f"erasing {args.expired} results by retention")
        request = archive_pb.SweepStuckJobsRequest(limit=500)
        request.stuck_after.FromSeconds(86400)
        request.max_processing.FromSeconds(86400)
        request.result_retention.FromSeconds(86400)
        sweeps, expired, started = 0, 0, time.perf_counter()
        while True:
            reply = await archive.SweepStuckJobs(request, timeout=300)
            sweeps += 1
            expired += reply.results_expired
            if not reply.results_expired:
                break
        retention_seconds = time.perf_counter() - started
    return {
        "machine": environment.machine(),
        "servers": stack.versions(),
        "erasure": {
            "finished_jobs": args.finished,
            "queued_jobs": args.queued,
            "seconds": round(erase_seconds, 3),
            "jobs_cancelled": erased.jobs_cancelled,
            "results_erased": erased.results_erased,
            "outbox_messages_erased": erased.outbox_messages_erased,
            "queue_messages_deleted": erased.queue_messages_deleted,
        },
        "retention": {
            "expired_jobs": args.expired,
            "results_expired": expired,
            "sweeps": sweeps,
            "seconds": round(retention_seconds, 3),
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.erasure", description=__doc__)
    parser.add_argument("--finished", type=int, default=2000)
    parser.add_argument("--queued", type=int, default=200)
    parser.add_argument("--expired", type=int, default=20_000)
    parser.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    args = parser.parse_args(argv)
    with running_stack({"ASSAY_MAX_INFLIGHT_PER_USER": "0"}) as stack:
        worker = stack.pids["worker"]
        os.kill(worker, signal.SIGSTOP)  # the queued jobs' messages stay on the stream
        try:
            result = asyncio.run(measure(stack, args))
        finally:
            os.kill(worker, signal.SIGCONT)
    emit(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
