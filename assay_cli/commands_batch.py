"""``assay submit --batch FILE.jsonl [--watch]``: a class's assessments in SubmitAssessments
calls (each all or nothing), a progress bar, a summary, and with ``--watch`` live counts by
status until every job is terminal.

Each line of the file is one submission in either format ``assay submit`` reads, plus an
optional ``user_id`` (internal callers and operators: the student the job is for). A line
without a ``request_id`` gets one made from its text and line number, so running the same
file again after a failure or a lost reply replays what was accepted and charges nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any, TextIO

from assay_client import MAX_BATCH, AssayClient

from assay.assessment.v1 import assessment_service_pb2 as pb
from assay.common.v1 import job_pb2
from assay_cli import output
from assay_cli.connect import CliError, Connection
from assay_cli.live import EXIT_JOB_FAILED, EXIT_OK, Items, until_live
from assay_cli.loader import SubmissionFileError, parse_submission
from assaylib.jobs import status_name

BAR_WIDTH = 30
LOOKUPS = 16  # concurrent GetJob calls for the jobs of a replayed batch


def load_batch(path: Path) -> list[pb.SubmitAssessmentRequest]:
    """The submissions of a JSON Lines file (blank lines skipped); an error names the line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise CliError(f"cannot read {path}: {err}") from None
    requests: list[pb.SubmitAssessmentRequest] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            document = json.loads(line)
            if not isinstance(document, dict):
                raise SubmissionFileError("expected a JSON object")
            user_id = document.pop("user_id", document.pop("userId", ""))
            request, _warnings = parse_submission(document)
        except (json.JSONDecodeError, SubmissionFileError) as err:
            raise CliError(f"{path}:{number}: {err}") from None
        request.user_id = str(user_id)
        if not request.request_id:
            digest = hashlib.sha256(line.strip().encode()).hexdigest()[:24]
            request.request_id = f"{digest}-{number}"
        requests.append(request)
    if not requests:
        raise CliError(f"{path} holds no submission")
    return requests


class ProgressBar:
    """``[#######-------]  420/1000 submitted`` on one line of ``stream``."""

    def __init__(self, total: int, stream: TextIO) -> None:
        self.total = total
        self.stream = stream

    def show(self, done: int) -> None:
        """Redraw the bar at ``done``."""
        filled = BAR_WIDTH * done // max(self.total, 1)
        bar = "#" * filled + "-" * (BAR_WIDTH - filled)
        self.stream.write(f"\r[{bar}] {done:>5}/{self.total} submitted")
        self.stream.flush()

    def end(self) -> None:
        """Finish the bar's line."""
        self.stream.write("\n")
        self.stream.flush()


def summary(replies: list[pb.SubmitAssessmentResponse]) -> str:
    """What was accepted: jobs, users, and the balance left when all are one user's."""
    balances = {r.job.user_id: r.tokens_remaining for r in replies}
    text = f"submitted {len(replies)} job(s) for {len(balances)} user(s)"
    if len(balances) == 1:
        ((user, left),) = balances.items()
        text += f"; {user} has {left} token(s) left"
    return text


def counts_text(statuses: dict[str, int]) -> str:
    """``QUEUED 12 · PROCESSING 4 · COMPLETED 284``."""
    counts = Counter(statuses.values())
    return " · ".join(f"{status_name(s)} {n}" for s, n in sorted(counts.items()))


async def batch_command(args: argparse.Namespace, conn: Connection) -> int:
    """``assay submit --batch FILE.jsonl [--watch]``."""
    requests = load_batch(Path(args.batch))
    for request in requests:
        if args.locale and not request.locale:
            request.locale = args.locale
    stream = sys.stderr if args.json else sys.stdout
    if not args.watch:
        replies = await _submit(await conn.client(), requests, args.chunk, stream)
        _report(replies, args.json)
        return EXIT_OK
    client = await conn.client("assessment", "notifier")
    async with contextlib.aclosing(client.watch(snapshot=False, bookmarks=True)) as items:
        await until_live(items)
        replies = await _submit(client, requests, args.chunk, stream)
        _report(replies, args.json)
        statuses = await _current(client, replies)
        await _follow(items, statuses, stream, args.timeout)
    failed = sum(1 for s in statuses.values() if s != job_pb2.JOB_STATUS_COMPLETED)
    return EXIT_OK if not failed else EXIT_JOB_FAILED


async def _submit(
    client: AssayClient, requests: list[pb.SubmitAssessmentRequest], chunk: int, stream: TextIO
) -> list[pb.SubmitAssessmentResponse]:
    bar = ProgressBar(len(requests), stream)
    bar.show(0)
    try:
        return await client.submit_many(requests, chunk_size=chunk, on_progress=bar.show)
    finally:
        bar.end()


def _report(replies: list[pb.SubmitAssessmentResponse], json_mode: bool) -> None:
    if json_mode:
        document: dict[str, Any] = output.to_dict(pb.SubmitAssessmentsResponse(responses=replies))
        output.print_json(document)
    else:
        print(summary(replies))


async def _current(
    client: AssayClient, replies: list[pb.SubmitAssessmentResponse]
) -> dict[str, int]:
    """Each job's status now: a replayed batch's jobs may have run already."""
    statuses = {r.job.job_id: int(r.job.status) for r in replies}
    gate = asyncio.Semaphore(LOOKUPS)

    async def look(job_id: str) -> None:
        async with gate:
            statuses[job_id] = int((await client.get(job_id)).status)

    await asyncio.gather(*(look(job_id) for job_id in statuses))
    return statuses


async def _follow(items: Items, statuses: dict[str, int], stream: TextIO, limit: float) -> None:
    """Live counts by status until every job is terminal."""
    versions: dict[str, int] = {}
    stream.write(f"\r{counts_text(statuses)}")
    try:
        async with asyncio.timeout(limit or None):
            while any(s not in output.TERMINAL for s in statuses.values()):
                item = await anext(items)
                if item.job_id not in statuses or item.kind not in ("event", "snapshot"):
                    continue
                if item.version <= versions.get(item.job_id, 0):
                    continue
                versions[item.job_id] = item.version
                statuses[item.job_id] = int(item.status)
                stream.write(f"\r{counts_text(statuses)}\033[K")
                stream.flush()
    except TimeoutError:
        stream.write("\n")
        raise CliError(
            f"not every job finished within {limit:g}s: {counts_text(statuses)}"
        ) from None
    stream.write("\n")
    stream.flush()


def check_chunk(text: str) -> int:
    """``--chunk``: 1 … 1000."""
    value = int(text)
    if not 1 <= value <= MAX_BATCH:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_BATCH}")
    return value
