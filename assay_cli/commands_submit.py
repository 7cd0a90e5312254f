"""Submitting and watching: ``submit FILE [--watch]`` and ``watch [--job ID] [--resume C]``.

``submit --watch`` opens WatchJobs on the caller's jobs *before* it submits and waits for
the stream's first bookmark (the watch is live from there), so even the QUEUED event is
seen; it then follows the new job's events until a terminal status.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio

from assay.assessment.v1 import assessment_service_pb2 as pb
from assay.common.v1 import job_pb2
from assay.events.v1 import events_pb2
from assay.notifier.v1 import notifier_service_pb2 as notifier_pb
from assay_cli import output
from assay_cli.connect import CliError, Connection
from assay_cli.loader import load_submission
from assaylib.errors import reason_of
from assaylib.jobs import status_name

if TYPE_CHECKING:
    from assay.notifier.v1.notifier_service_pb2_grpc import NotifierServiceAsyncStub

RPC_TIMEOUT = 30.0
LIVE_TIMEOUT = 15.0  # seconds for a new watch to become live
CATCH_UP = 3.0  # seconds to wait for the events of a job found already finished
EXIT_OK, EXIT_JOB_FAILED = 0, 1


def register(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add ``submit`` and ``watch``."""
    submit = commands.add_parser(
        "submit", parents=[common], help="submit an assessment file (ours or the original format)"
    )
    submit.add_argument("file", metavar="FILE")
    submit.add_argument("--watch", action="store_true", help="follow the job and print the profile")
    submit.add_argument("--request-id", default="", help="idempotency key (default: the file's)")
    submit.add_argument(
        "--locale",
        default="",
        metavar="TAG",
        help="the profile's language: id (Bahasa Indonesia) or en (English); default: the "
        "file's, else the service's ASSAY_DEFAULT_LOCALE",
    )
    submit.add_argument("--timeout", type=float, default=0.0, help="give up watching after N s")
    submit.set_defaults(run=submit_command)
    watch = commands.add_parser("watch", parents=[common], help="stream job status events")
    watch.add_argument("--job", default="", help="one job; ends when it finishes")
    watch.add_argument(
        "--resume",
        type=int,
        default=0,
        metavar="CURSOR",
        help="replay the events after this cursor",
    )
    watch.add_argument("--user", default="", help="operators: this user's jobs (default all)")
    watch.add_argument("--snapshot", action="store_true", help="start with the current jobs")
    watch.add_argument("--timeout", type=float, default=0.0, help="stop after N s")
    watch.set_defaults(run=watch_command)


class JobStream:
    """One WatchJobs call, read item by item."""

    def __init__(self, call: Any) -> None:
        self.call = call
        self._items: AsyncIterator[notifier_pb.WatchJobsResponse] = call.__aiter__()
        self.cursor = 0

    async def next(self) -> notifier_pb.WatchJobsResponse:
        """The next item; CliError when the notifier ends the stream."""
        try:
            item = await anext(self._items)
        except StopAsyncIteration:
            raise CliError(
                f"the notifier ended the watch; resume with --resume {self.cursor}"
            ) from None
        except grpc.aio.AioRpcError as err:
            if reason_of(err) == "RESUME_TOKEN_EXPIRED":
                raise CliError(
                    f"cursor {self.cursor} is older than the events the notifier keeps; "
                    "list the jobs (assay jobs list) and watch again without --resume"
                ) from None
            raise
        if item.HasField("event"):
            self.cursor = item.event.cursor
        elif item.HasField("bookmark"):
            self.cursor = max(self.cursor, item.bookmark.cursor)
        return item

    async def until_live(self) -> list[notifier_pb.WatchJobsResponse]:
        """Read up to the first bookmark (the watch is live from there); the snapshots."""
        snapshots = []
        async with asyncio.timeout(LIVE_TIMEOUT):
            while not (item := await self.next()).HasField("bookmark"):
                snapshots.append(item)
        return snapshots


@asynccontextmanager
async def watching(
    stub: NotifierServiceAsyncStub, request: notifier_pb.WatchJobsRequest
) -> AsyncIterator[JobStream]:
    """A live WatchJobs stream, cancelled on exit."""
    stream = JobStream(stub.WatchJobs(request))
    stream.cursor = request.resume_after
    try:
        yield stream
    finally:
        stream.call.cancel()


async def submit_command(args: argparse.Namespace, conn: Connection) -> int:
    """``assay submit FILE [--watch]``."""
    request, warnings = load_submission(Path(args.file))
    for warning in warnings:
        output.progress(f"warning: {args.file}: {warning}")
    if args.request_id:
        request.request_id = args.request_id
    if args.locale:
        request.locale = args.locale
    if args.watch:
        return await submit_and_follow(conn, request, json_mode=args.json, wait_limit=args.timeout)
    stub = await conn.assessment()
    reply = await stub.SubmitAssessment(request, timeout=RPC_TIMEOUT)
    if args.json:
        output.print_json(output.to_dict(reply))
    else:
        print(
            f"submitted job {reply.job.job_id} ({output.job_status(reply.job)}); "
            f"{reply.tokens_remaining} token(s) left"
        )
        print(f"follow it with: assay watch --job {reply.job.job_id}")
    return EXIT_OK


async def submit_and_follow(
    conn: Connection, request: pb.SubmitAssessmentRequest, *, json_mode: bool, wait_limit: float
) -> int:
    """Watch, submit, follow the job to its end, print it; exit 1 unless COMPLETED."""
    stub = await conn.assessment()
    notifier = await conn.notifier()
    progress_stream = sys.stderr if json_mode else sys.stdout
    async with watching(notifier, notifier_pb.WatchJobsRequest()) as stream:
        await stream.until_live()
        reply = await stub.SubmitAssessment(request, timeout=RPC_TIMEOUT)
        job_id = reply.job.job_id
        if not json_mode:
            print(f"submitted job {job_id}; {reply.tokens_remaining} token(s) left")
        line = output.StatusLine(job_id, progress_stream)
        # The current state (a repeated request_id may name a job that already ran).
        current = (await stub.GetJob(pb.GetJobRequest(job_id=job_id), timeout=RPC_TIMEOUT)).job
        events = await follow(stream, line, reply.job, current, wait_limit)
    job = (await stub.GetJob(pb.GetJobRequest(job_id=job_id), timeout=RPC_TIMEOUT)).job
    result = None
    if job.status == job_pb2.JOB_STATUS_COMPLETED:
        result = (
            await stub.GetResult(pb.GetResultRequest(job_id=job_id), timeout=RPC_TIMEOUT)
        ).result
    if json_mode:
        document: dict[str, Any] = output.to_dict(
            pb.SubmitAssessmentResponse(job=job, tokens_remaining=reply.tokens_remaining)
        )
        document["events"] = [output.to_dict(event) for event in events]
        if result is not None:
            document["result"] = output.to_dict(result)
        output.print_json(document)
    else:
        print_outcome(job, result)
    return EXIT_OK if job.status == job_pb2.JOB_STATUS_COMPLETED else EXIT_JOB_FAILED


async def next_event(
    stream: JobStream, job_id: str, patience: float | None
) -> events_pb2.JobEvent | None:
    """The job's next event; None when none arrives within patience seconds."""
    try:
        async with asyncio.timeout(patience):
            while True:
                item = await stream.next()
                if item.HasField("event") and item.event.job_id == job_id:
                    return item.event
    except TimeoutError:
        return None


async def follow(
    stream: JobStream,
    line: output.StatusLine,
    submitted: job_pb2.Job,
    current: job_pb2.Job,
    wait_limit: float,
) -> list[events_pb2.JobEvent]:
    """Show the job's status changes from its submission until it is terminal; its events.

    ``current`` is the job read after submitting: when it is already terminal, its events
    either sit in the stream (they arrive at once) or predate the watch (a repeated
    request_id), in which case ``current`` is shown after a short wait.
    """
    events: list[events_pb2.JobEvent] = []
    state = job_pb2.Job(status=submitted.status, version=submitted.version)
    line.show(output.job_status(submitted))
    patience = CATCH_UP if current.status in output.TERMINAL else None
    try:
        async with asyncio.timeout(wait_limit or None):
            while state.status not in output.TERMINAL:
                event = await next_event(stream, submitted.job_id, patience)
                if event is None:
                    state.CopyFrom(current)
                    line.show(output.job_status(current))
                    break
                events.append(event)
                if event.job_version <= state.version:
                    continue  # a transition already shown
                state.version, state.status = event.job_version, event.status
                meta = event.metadata
                line.show(
                    output.status_text(
                        event.status, meta.attempt, meta.error_code, meta.processing_time_ms
                    )
                )
    except TimeoutError:
        line.end()
        job_id, status = submitted.job_id, status_name(state.status)
        raise CliError(
            f"job {job_id} is still {status} after {wait_limit:g}s; "
            f"follow it with: assay watch --job {job_id}"
        ) from None
    line.end()
    return events


def print_outcome(job: job_pb2.Job, result: Any) -> None:
    """The profile of a completed job, or why it did not complete."""
    if result is not None and result.HasField("test_result"):
        print()
        print(output.profile_text(result.test_result))
        print()
        print(f"result {result.result_id} · full JSON: assay results get {job.job_id} --json")
    elif job.status != job_pb2.JOB_STATUS_COMPLETED:
        why = f"{job.error_code}: {job.error_message}" if job.error_code else "no reason given"
        output.print_error(f"job {job.job_id} ended {status_name(job.status)}: {why}")


async def watch_command(args: argparse.Namespace, conn: Connection) -> int:
    """``assay watch``: events as they happen (JSON Lines with --json)."""
    notifier = await conn.notifier()
    request = notifier_pb.WatchJobsRequest(
        user_id=args.user,
        job_id=args.job,
        resume_after=args.resume,
        include_snapshot=bool(args.job) or args.snapshot,
    )
    async with watching(notifier, request) as stream:
        try:
            async with asyncio.timeout(args.timeout or None):
                return await _print_stream(stream, args)
        except TimeoutError:
            return EXIT_OK


async def _print_stream(stream: JobStream, args: argparse.Namespace) -> int:
    live = False
    while True:
        item = await stream.next()
        if args.json:
            output.print_json_line(output.to_dict(item))
        else:
            live = _print_item(item, live)
        status = _job_status_of(item, args.job)
        if status in output.TERMINAL:
            return EXIT_OK if status == job_pb2.JOB_STATUS_COMPLETED else EXIT_JOB_FAILED


def _print_item(item: notifier_pb.WatchJobsResponse, live: bool) -> bool:
    if item.HasField("snapshot"):
        job = item.snapshot
        print(f"{output.when(job.updated_at)}  snapshot  {job.job_id}  {output.job_status(job)}")
    elif item.HasField("event"):
        print(output.event_line(item.event), flush=True)
    elif not live:
        output.progress(f"watching from cursor {item.bookmark.cursor} (Ctrl-C to stop)")
        return True
    return live


def _job_status_of(item: notifier_pb.WatchJobsResponse, job_id: str) -> int:
    """The status an item reports for the watched job (0 when none is watched)."""
    if not job_id:
        return 0
    if item.HasField("snapshot") and item.snapshot.job_id == job_id:
        return item.snapshot.status
    if item.HasField("event") and item.event.job_id == job_id:
        return item.event.status
    return 0
