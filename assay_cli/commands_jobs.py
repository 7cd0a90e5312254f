"""Jobs and results: ``jobs list|get``, ``results get``, ``retry``, ``cancel``, ``stuck list``
and ``sweep`` (the last two are operator commands on the archive)."""

from __future__ import annotations

import argparse

from assay.archive.v1 import archive_service_pb2 as archive_pb
from assay.assessment.v1 import assessment_service_pb2 as pb
from assay.common.v1 import job_pb2
from assay_cli import output
from assay_cli.connect import Connection
from assaylib.jobs import status_name
from assaylib.sweeps import sweep_request

DEFAULT_LIMIT = 20
EXIT_OK, EXIT_HELD_BACK = 0, 3
RPC_TIMEOUT = 30.0


def job_status_arg(text: str) -> int:
    """``queued`` / ``QUEUED`` / ``JOB_STATUS_QUEUED`` → the enum value (argparse type)."""
    name = text.strip().upper().removeprefix("JOB_STATUS_")
    try:
        value = job_pb2.JobStatus.Value(f"JOB_STATUS_{name}")
    except ValueError:
        choices = ", ".join(status_name(v) for v in job_pb2.JobStatus.values() if v)
        raise argparse.ArgumentTypeError(f"unknown status {text!r}; one of {choices}") from None
    return int(value)


def positive_int(text: str) -> int:
    """A positive integer (argparse type)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def register(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add the job, result, stuck and sweep commands."""
    jobs = commands.add_parser("jobs", help="list or show jobs").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    listing = jobs.add_parser("list", parents=[common], help="list jobs, newest first")
    listing.add_argument("--status", type=job_status_arg, help="only jobs in this status")
    listing.add_argument("--user", default="", help="operators: this user's jobs")
    listing.add_argument("--limit", type=positive_int, default=DEFAULT_LIMIT)
    listing.set_defaults(run=jobs_list)
    get = jobs.add_parser("get", parents=[common], help="show one job")
    get.add_argument("job_id", metavar="JOB")
    get.set_defaults(run=jobs_get)

    results = commands.add_parser("results", help="show analysis results").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    result = results.add_parser("get", parents=[common], help="a job's result and profile")
    which = result.add_mutually_exclusive_group(required=True)
    which.add_argument("job_id", metavar="JOB", nargs="?")
    which.add_argument("--result-id", default="")
    result.set_defaults(run=results_get)

    for name, run, text in (
        ("retry", retry, "re-queue a failed job (charges again)"),
        ("cancel", cancel, "cancel a queued or processing job"),
    ):
        command = commands.add_parser(name, parents=[common], help=text)
        command.add_argument("job_id", metavar="JOB")
        command.set_defaults(run=run)

    stuck = commands.add_parser("stuck", help="stuck jobs (operator)").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    stuck_list = stuck.add_parser(
        "list", parents=[common], help="PROCESSING jobs past ASSAY_STUCK_AFTER/MAX_PROCESSING"
    )
    stuck_list.add_argument("--limit", type=positive_int, default=100)
    stuck_list.set_defaults(run=stuck_jobs)

    sweep = commands.add_parser("sweep", parents=[common], help="fail stuck jobs (operator)")
    sweep.add_argument("--dry-run", action="store_true", help="list, change nothing")
    sweep.add_argument("--force", action="store_true", help="override the mass-failure guard")
    sweep.set_defaults(run=sweep_stuck)


async def jobs_list(args: argparse.Namespace, conn: Connection) -> int:
    """``assay jobs list``: up to --limit jobs, a page at a time (the client's paging)."""
    client = await conn.client()
    listing = client.list(
        status=args.status or job_pb2.JOB_STATUS_UNSPECIFIED, user_id=args.user, limit=args.limit
    )
    jobs = [job async for job in listing]
    if args.json:
        page = pb.ListJobsResponse(jobs=jobs, next_page_token=listing.next_page_token)
        output.print_json(output.to_dict(page))
    elif jobs:
        print(output.jobs_table(jobs))
        if listing.next_page_token:
            print(f"(more than {args.limit}; use --limit)")
    else:
        print("no jobs")
    return EXIT_OK


async def jobs_get(args: argparse.Namespace, conn: Connection) -> int:
    """``assay jobs get JOB``."""
    job = await (await conn.client()).get(args.job_id)
    if args.json:
        output.print_json(output.to_dict(pb.GetJobResponse(job=job)))
    else:
        print(output.job_details(job))
    return EXIT_OK


async def results_get(args: argparse.Namespace, conn: Connection) -> int:
    """``assay results get JOB`` or ``--result-id R``."""
    client = await conn.client()
    result = await client.result(args.job_id or "", result_id=args.result_id)
    if args.json:
        output.print_json(output.to_dict(pb.GetResultResponse(result=result)))
        return EXIT_OK
    print(f"result {result.result_id} of job {result.job_id} ({result.assessment_name})")
    if result.HasField("test_result"):
        print(output.profile_text(result.test_result))
    else:
        print(f"no profile yet: the job has not completed (assay jobs get {result.job_id})")
    return EXIT_OK


async def retry(args: argparse.Namespace, conn: Connection) -> int:
    """``assay retry JOB``."""
    reply = await (await conn.client()).retry(args.job_id)
    if args.json:
        output.print_json(output.to_dict(reply))
    else:
        print(
            f"job {reply.job.job_id}: {output.job_status(reply.job)} "
            f"({reply.tokens_remaining} token(s) left)"
        )
    return EXIT_OK


async def cancel(args: argparse.Namespace, conn: Connection) -> int:
    """``assay cancel JOB``."""
    job = await (await conn.client()).cancel(args.job_id)
    if args.json:
        output.print_json(output.to_dict(pb.CancelJobResponse(job=job)))
    elif job.cancel_requested:
        print(f"job {job.job_id}: cancel requested; the worker stops at its next heartbeat")
    else:
        print(f"job {job.job_id}: {output.job_status(job)}")
    return EXIT_OK


async def stuck_jobs(args: argparse.Namespace, conn: Connection) -> int:
    """``assay stuck list``: the archive's ListStuckJobs with the configured thresholds."""
    stub = await conn.archive()
    settings = conn.target.settings
    jobs: list[job_pb2.Job] = []
    page_token, in_flight = "", 0
    while True:
        request = archive_pb.ListStuckJobsRequest(
            page_size=min(args.limit - len(jobs), 100), page_token=page_token
        )
        request.stuck_after.FromNanoseconds(int(settings.stuck_after * 1e9))
        request.max_processing.FromNanoseconds(int(settings.max_processing * 1e9))
        reply = await stub.ListStuckJobs(request, timeout=RPC_TIMEOUT)
        jobs += reply.jobs
        page_token, in_flight = reply.next_page_token, reply.in_flight
        if not page_token or len(jobs) >= args.limit:
            break
    if args.json:
        page = archive_pb.ListStuckJobsResponse(
            jobs=jobs, next_page_token=page_token, in_flight=in_flight
        )
        output.print_json(output.to_dict(page))
        return EXIT_OK
    print(
        f"{len(jobs)} stuck of {in_flight} processing (heartbeat older than "
        f"{settings.stuck_after:g}s or processing longer than {settings.max_processing:g}s)"
    )
    if jobs:
        print(output.jobs_table(jobs))
    return EXIT_OK


async def sweep_stuck(args: argparse.Namespace, conn: Connection) -> int:
    """``assay sweep [--dry-run] [--force]``: exit 3 when the guard held it back."""
    stub = await conn.archive()
    request = sweep_request(conn.target.settings, dry_run=args.dry_run, force=args.force)
    reply = await stub.SweepStuckJobs(request, timeout=60)
    if args.json:
        output.print_json(output.to_dict(reply))
    elif reply.lock_busy:
        print("another sweep holds the lock; nothing done")
    elif reply.held_back:
        print(f"held back: {reply.reason} (--force overrides)")
    else:
        verb = "would fail" if args.dry_run else "failed and refunded"
        count = len(reply.jobs) if args.dry_run else reply.failed
        print(
            f"{reply.found} stuck of {reply.in_flight} processing; {verb} {count}; "
            f"{reply.queued_found} lost of {reply.queued} queued, re-published {reply.requeued}"
        )
        if reply.jobs:
            print(output.jobs_table(reply.jobs))
    return EXIT_HELD_BACK if reply.held_back else EXIT_OK
