"""Submitting and watching: ``submit FILE [--watch]`` and ``watch [--job ID] [--resume C]``,
both through ``assay_client`` (its request ids and retries, and its watch, which resumes
after a disconnect and relists when its cursor expired).

``submit --watch`` opens a watch on the caller's jobs *before* it submits and waits for
its first bookmark (the watch is live from there), so even the QUEUED event is seen; it
then follows the new job's events until a terminal status.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from pathlib import Path
from typing import Any

from assay_client import AssayClient, WatchItem

from assay.assessment.v1 import assessment_service_pb2 as pb
from assay.common.v1 import job_pb2
from assay.events.v1 import events_pb2
from assay_cli import output
from assay_cli.commands_batch import batch_command, check_chunk
from assay_cli.connect import CliError, Connection
from assay_cli.live import EXIT_JOB_FAILED, EXIT_OK, Items, until_live
from assay_cli.loader import load_submission
from assaylib.jobs import status_name

CATCH_UP = 3.0  # seconds to wait for the events of a job found already finished


def register(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add ``submit`` and ``watch``."""
    submit = commands.add_parser(
        "submit", parents=[common], help="submit an assessment file (ours or the original format)"
    )
    submit.add_argument("file", metavar="FILE", nargs="?", default="")
    submit.add_argument(
        "--batch",
        metavar="FILE.jsonl",
        default="",
        help="submit every line of a JSON Lines file (up to 1,000 per call, all or nothing)",
    )
    submit.add_argument(
        "--chunk",
        type=check_chunk,
        default=1000,
        metavar="N",
        help="with --batch: submissions per call (default 1000)",
    )
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


async def submit(
    client: AssayClient, request: pb.SubmitAssessmentRequest
) -> pb.SubmitAssessmentResponse:
    """Send a loaded submission (the client makes a request id when the file has none)."""
    return await client.submit(
        request.assessment_data if request.HasField("assessment_data") else None,
        raw_responses=request.raw_responses if request.HasField("raw_responses") else None,
        assessment_name=request.assessment_name,
        request_id=request.request_id,
        locale=request.locale,
    )


async def submit_command(args: argparse.Namespace, conn: Connection) -> int:
    """``assay submit FILE [--watch]``."""
    if args.batch:
        return await batch_command(args, conn)
    if not args.file:
        raise CliError("name a submission FILE, or --batch FILE.jsonl")
    request, warnings = load_submission(Path(args.file))
    for warning in warnings:
        output.progress(f"warning: {args.file}: {warning}")
    if args.request_id:
        request.request_id = args.request_id
    if args.locale:
        request.locale = args.locale
    if args.watch:
        return await submit_and_follow(conn, request, json_mode=args.json, wait_limit=args.timeout)
    reply = await submit(await conn.client(), request)
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
    client = await conn.client("assessment", "notifier")
    progress_stream = sys.stderr if json_mode else sys.stdout
    async with contextlib.aclosing(client.watch(snapshot=False, bookmarks=True)) as items:
        await until_live(items)
        reply = await submit(client, request)
        job_id = reply.job.job_id
        if not json_mode:
            print(f"submitted job {job_id}; {reply.tokens_remaining} token(s) left")
        line = output.StatusLine(job_id, progress_stream)
        # The current state (a repeated request_id may name a job that already ran).
        current = await client.get(job_id)
        events = await follow(items, line, reply.job, current, wait_limit)
    job = await client.get(job_id)
    result = await client.result(job_id) if job.status == job_pb2.JOB_STATUS_COMPLETED else None
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


async def next_change(items: Items, job_id: str, patience: float | None) -> WatchItem | None:
    """The job's next event (or its snapshot after a relist); None when none arrives within
    patience seconds (the watch is then closed)."""
    try:
        async with asyncio.timeout(patience):
            async for item in items:
                if item.job_id == job_id and item.kind in ("event", "snapshot"):
                    return item
    except TimeoutError:
        return None
    return None  # a watch only ends when closed


async def follow(
    items: Items,
    line: output.StatusLine,
    submitted: job_pb2.Job,
    current: job_pb2.Job,
    wait_limit: float,
) -> list[events_pb2.JobEvent]:
    """Show the job's status changes from its submission until it is terminal; its events.

    ``current`` is the job read after submitting: when it is already terminal, its events
    either sit in the watch (they arrive at once) or predate it (a repeated request_id), in
    which case ``current`` is shown after a short wait.
    """
    events: list[events_pb2.JobEvent] = []
    state = job_pb2.Job(status=submitted.status, version=submitted.version)
    line.show(output.job_status(submitted))
    patience = CATCH_UP if current.status in output.TERMINAL else None
    try:
        async with asyncio.timeout(wait_limit or None):
            while state.status not in output.TERMINAL:
                change = await next_change(items, submitted.job_id, patience)
                if change is None:
                    state.CopyFrom(current)
                    line.show(output.job_status(current))
                    break
                if change.event is not None:
                    events.append(change.event)
                if change.version <= state.version:
                    continue  # a transition already shown
                state.version, state.status = change.version, change.status
                line.show(change_text(change))
    except TimeoutError:
        line.end()
        job_id, status = submitted.job_id, status_name(state.status)
        raise CliError(
            f"job {job_id} is still {status} after {wait_limit:g}s; "
            f"follow it with: assay watch --job {job_id}"
        ) from None
    line.end()
    return events


def change_text(change: WatchItem) -> str:
    """A status change for the status line: the event's, with its attempt and error."""
    if change.event is None:
        assert change.job is not None
        return output.job_status(change.job)
    meta = change.event.metadata
    return output.status_text(change.status, meta.attempt, meta.error_code, meta.processing_time_ms)


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
    """``assay watch``: events as they happen (JSON Lines with --json), across disconnects."""
    client = await conn.client("notifier")
    watch = client.watch(
        user_id=args.user,
        job_id=args.job,
        resume_after=args.resume,
        snapshot=bool(args.job) or args.snapshot,
        bookmarks=True,
    )
    async with contextlib.aclosing(watch) as items:
        try:
            async with asyncio.timeout(args.timeout or None):
                return await _print_items(items, args)
        except TimeoutError:
            return EXIT_OK


async def _print_items(items: Items, args: argparse.Namespace) -> int:
    live = False
    async for item in items:
        if args.json:
            output.print_json_line(output.watch_item_dict(item))
        else:
            live = _print_item(item, live)
        if args.job and item.job_id == args.job and item.status in output.TERMINAL:
            return EXIT_OK if item.status == job_pb2.JOB_STATUS_COMPLETED else EXIT_JOB_FAILED
    return EXIT_OK  # a watch only ends when closed


def _print_item(item: WatchItem, live: bool) -> bool:
    if item.job is not None:
        job = item.job
        print(f"{output.when(job.updated_at)}  snapshot  {job.job_id}  {output.job_status(job)}")
    elif item.event is not None:
        print(output.event_line(item.event), flush=True)
    elif item.kind == "relisted":
        output.progress(
            f"cursor {item.cursor} is older than the events the notifier keeps; "
            "listing the jobs again"
        )
    elif not live:
        output.progress(f"watching from cursor {item.cursor} (Ctrl-C to stop)")
        return True
    return live
