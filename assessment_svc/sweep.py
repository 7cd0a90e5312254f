"""`python -m assessment_svc.sweep`: one stuck-job sweep, then exit (the CronJob's command).

A job is stuck when it is PROCESSING and its heartbeat is older than ASSAY_STUCK_AFTER, or
it has been processing longer than ASSAY_MAX_PROCESSING. The archive fails each with code
STUCK, refunds it once and emits `analysis.stuck`, under a PostgreSQL advisory lock so runs
never overlap. When more than ASSAY_SWEEP_MAX_FRACTION of in-flight jobs look stuck at
once, the heartbeat path is broken rather than every worker, so the sweep holds back
(exit 3) unless --force. With ASSAY_RESULT_RETENTION set, the same run then erases, in a pass
of its own under the same lock, the results of jobs that ended longer ago than it.

Exit codes: 0 swept (or nothing to do, or another sweep holds the lock), 1 the archive is
unreachable or refused, 2 bad configuration, 3 held back by the guard. The last line of
output is a one-line JSON summary.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from typing import Any

import grpc

from assay.archive.v1 import archive_service_pb2 as pb
from assay.archive.v1 import archive_service_pb2_grpc as pb_grpc
from assaylib import process
from assaylib.auth import service_token
from assaylib.channels import open_channel
from assaylib.config import Settings
from assaylib.errors import error_from_rpc
from assaylib.sweeps import sweep_request

log = logging.getLogger("assessment_svc.sweep")

EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_HELD_BACK = 0, 1, 2, 3
SWEEP_TIMEOUT = 40.0  # seconds; inside the CronJob's activeDeadlineSeconds (50)


def summary(reply: pb.SweepStuckJobsResponse, *, dry_run: bool) -> dict[str, Any]:
    """The one-line JSON summary of a sweep."""
    return {
        "found": reply.found,
        "failed": reply.failed,
        "refunded": reply.refunded,
        "skipped": reply.skipped,
        "held_back": reply.held_back,
        "lock_busy": reply.lock_busy,
        "in_flight": reply.in_flight,
        "queued": reply.queued,
        "queued_found": reply.queued_found,
        "requeued": reply.requeued,
        "results_expired": reply.results_expired,
        "access_records_pruned": reply.access_records_pruned,
        "dry_run": dry_run,
        "jobs": [job.job_id for job in reply.jobs],
        "reason": reply.reason,
    }


def exit_code(reply: pb.SweepStuckJobsResponse) -> int:
    """The process exit code for a sweep's outcome."""
    return EXIT_HELD_BACK if reply.held_back else EXIT_OK


async def sweep_once(
    settings: Settings, *, dry_run: bool, force: bool
) -> pb.SweepStuckJobsResponse:
    """Ask the archive for one sweep."""
    token = service_token(settings, "sweep")
    channel = open_channel(settings.archive_addr, settings, token=token)
    try:
        stub = pb_grpc.ArchiveServiceStub(channel)
        request = sweep_request(settings, dry_run=dry_run, force=force)
        reply: pb.SweepStuckJobsResponse = await stub.SweepStuckJobs(request, timeout=SWEEP_TIMEOUT)
        return reply
    finally:
        await channel.close()


def report(reply: pb.SweepStuckJobsResponse, *, dry_run: bool) -> None:
    """Say what happened in a log line (JSON in a pod, like every Assay log), then print the
    JSON summary line on stdout."""
    if reply.lock_busy:
        log.info("another sweep holds the lock; nothing done")
    elif reply.held_back:
        log.warning("held back: %s", reply.reason)
    else:
        verb = "would fail" if dry_run else "failed and refunded"
        count = len(reply.jobs) if dry_run else reply.failed
        log.info(
            "%d stuck of %d in flight, %d lost of %d queued; %s %d, re-published %d;"
            " %d result(s) past retention erased",
            reply.found,
            reply.in_flight,
            reply.queued_found,
            reply.queued,
            verb,
            count,
            reply.requeued,
            reply.results_expired,
        )
    print(json.dumps(summary(reply, dry_run=dry_run)), flush=True)


async def run(settings: Settings, *, dry_run: bool, force: bool) -> int:
    """One sweep, reported; returns the exit code."""
    try:
        reply = await sweep_once(settings, dry_run=dry_run, force=force)
    except grpc.aio.AioRpcError as err:
        error = error_from_rpc(err)
        log.error("sweep failed: %s: %s", err.code().name, error)
        print(json.dumps({"error": err.code().name, "message": str(error)}), flush=True)
        return EXIT_FAILED
    report(reply, dry_run=dry_run)
    return exit_code(reply)


async def run_forever(settings: Settings, *, force: bool, stop: asyncio.Event) -> None:
    """Sweep every ASSAY_SWEEP_INTERVAL until stop is set (the local stack's sweep loop)."""
    while not stop.is_set():
        await run(settings, dry_run=False, force=force)
        try:
            await asyncio.wait_for(stop.wait(), settings.sweep_interval)
        except TimeoutError:
            continue


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m assessment_svc.sweep",
        description="Fail stuck jobs, refund them once and notify; one run, then exit.",
    )
    parser.add_argument("--dry-run", action="store_true", help="list, change nothing")
    parser.add_argument("--force", action="store_true", help="override the mass-failure guard")
    parser.add_argument("--loop", action="store_true", help="sweep every ASSAY_SWEEP_INTERVAL")
    args = parser.parse_args(argv)
    settings = process.settings_or_exit(
        "sweep", allow_missing_keys=True, metrics=False
    )  # exit 2 when bad
    if args.loop:
        process.run(sweep_until_stopped(settings, force=args.force))
        return EXIT_OK
    return process.run(run(settings, dry_run=args.dry_run, force=args.force))


async def sweep_until_stopped(settings: Settings, *, force: bool) -> None:
    """The local stack's sweep loop, until SIGTERM or SIGINT."""
    await run_forever(settings, force=force, stop=process.stop_on_signals())


if __name__ == "__main__":
    sys.exit(main())
