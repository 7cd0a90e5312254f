"""``assay status``: the whole system on one screen for operators (the archive's
GetSystemStatus), ``--json`` for scripts, ``--watch`` to refresh it in place."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from assay.archive.v1 import archive_service_pb2 as archive_pb
from assay_cli import output
from assay_cli.connect import Connection
from assaylib.jobs import status_name

EXIT_OK = 0
RPC_TIMEOUT = 10.0
CLEAR = "\033[H\033[2J"  # cursor home, clear the screen


def positive_seconds(text: str) -> float:
    """A positive number of seconds (argparse type)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return value


def register(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add ``status``."""
    status = commands.add_parser(
        "status", parents=[common], help="the whole system on one screen (operator)"
    )
    status.add_argument("--watch", action="store_true", help="refresh until Ctrl-C")
    status.add_argument(
        "--interval", type=positive_seconds, default=2.0, help="seconds between refreshes"
    )
    status.set_defaults(run=status_command)


async def status_command(args: argparse.Namespace, conn: Connection) -> int:
    """``assay status [--watch]``: one look, or one per --interval until interrupted (with
    --json, one JSON object per line when watching)."""
    stub = await conn.archive()
    request = archive_pb.GetSystemStatusRequest()
    while True:
        reply = await stub.GetSystemStatus(request, timeout=RPC_TIMEOUT)
        if args.json and args.watch:
            output.print_json_line(output.to_dict(reply))
        elif args.json:
            output.print_json(output.to_dict(reply))
        else:
            screen = status_text(reply)
            if args.watch and sys.stdout.isatty():
                screen = CLEAR + screen + f"\n\nevery {args.interval:g}s · Ctrl-C to stop"
            print(screen, flush=True)
        if not args.watch:
            return EXIT_OK
        await asyncio.sleep(args.interval)


def age(duration: Duration) -> str:
    """A short age: 0.4s, 12s, 3m05s, 2h04m."""
    seconds = duration.ToTimedelta().total_seconds()
    if seconds < 10:
        return f"{seconds:.1f}s"
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def ago(stamp: Timestamp, now: Timestamp) -> str:
    """How long before ``now`` ``stamp`` was."""
    gap = Duration()
    gap.FromTimedelta(max(now.ToDatetime() - stamp.ToDatetime(), dt.timedelta(0)))
    return age(gap) + " ago"


def status_text(reply: archive_pb.GetSystemStatusResponse) -> str:
    """The readable screen."""
    now = reply.observed_at
    stamp = now.ToDatetime(tzinfo=dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    jobs = " · ".join(f"{status_name(c.status)} {c.count:,}" for c in reply.jobs)
    minute = reply.last_minute
    lines = [
        f"Assay status · {stamp}",
        "",
        f"  {'jobs':<12} {jobs}",
        f"  {'oldest':<12} queued {age(reply.oldest_queued_age)}"
        f" · processing {age(reply.oldest_processing_age)}",
        f"  {'last minute':<12} submitted {minute.submitted:,} · completed {minute.completed:,}"
        f" · failed {minute.failed:,} · cancelled {minute.cancelled:,}"
        f" ({(minute.completed + minute.failed) / 60:.1f} jobs/s ended)",
        f"  {'outbox':<12} {reply.outbox_unsent:,} unsent"
        + (f" (oldest {age(reply.outbox_oldest_unsent_age)})" if reply.outbox_unsent else ""),
    ]
    if reply.HasField("consumer"):
        consumer = reply.consumer
        lines.append(
            f"  {'queue':<12} pending {consumer.pending:,} · delivered, unacked"
            f" {consumer.ack_pending:,} · redelivered {consumer.redelivered:,}"
            f" · idle pulls {consumer.waiting:,}"
        )
    else:
        lines.append(f"  {'queue':<12} unknown (JetStream did not answer the archive)")
    lines.append(f"  {'workers':<12} {len(reply.workers)} seen in the last minute")
    for worker in reply.workers:
        lines.append(
            f"    {worker.worker_id:<28} last seen {ago(worker.last_seen, now):<10}"
            f" processing {worker.processing:<4} ended {worker.finished_last_minute}"
        )
    lines.append(f"  {'last sweep':<12} {sweep_text(reply)}")
    lines.append(f"  {'retention':<12} {retained_text(reply)}")
    return "\n".join(lines)


def retained_text(reply: archive_pb.GetSystemStatusResponse) -> str:
    """The oldest result still holding its content, in a sentence."""
    if not reply.HasField("oldest_retained_result"):
        return "no result holds content"
    oldest = reply.oldest_retained_result
    when = oldest.ToDatetime(tzinfo=dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"oldest retained result submitted {when} ({ago(oldest, reply.observed_at)})"


def sweep_text(reply: archive_pb.GetSystemStatusResponse) -> str:
    """The last sweep in a sentence."""
    if not reply.HasField("last_sweep"):
        return "none recorded"
    sweep = reply.last_sweep
    text = (
        f"{ago(sweep.ran_at, reply.observed_at)}: found {sweep.found}, failed {sweep.failed},"
        f" re-published {sweep.requeued} (of {sweep.in_flight} processing, {sweep.queued} queued)"
    )
    return text + (f"; HELD BACK: {sweep.reason}" if sweep.held_back else "")
