"""One run of ``assay import original``: users, then jobs, then results without a job, batch
by batch, the checkpoint moved after each (``commands_import`` explains resuming)."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from assay.archive.v1 import archive_service_pb2 as archive_pb
from assay_cli import import_verify
from assay_cli.import_report import Checkpoint, Progress, Rejects
from assay_cli.original import IN_FLIGHT, Reject, Shape, Source, reject_of, to_original

if TYPE_CHECKING:
    from assay.archive.v1.archive_service_pb2_grpc import ArchiveServiceAsyncStub

RPC_TIMEOUT = 300.0
MAX_BATCH = 1000  # the archive's limit per call
MAX_REQUEST_BYTES = 3 * 1024 * 1024  # under the channels' 4 MiB message limit
IN_FLIGHT_MODES = {
    "queue": archive_pb.IN_FLIGHT_HANDLING_QUEUE,
    "fail": archive_pb.IN_FLIGHT_HANDLING_FAIL,
}
KINDS = {
    archive_pb.IMPORT_OUTCOME_KIND_IMPORTED: "imported",
    archive_pb.IMPORT_OUTCOME_KIND_SKIPPED: "skipped",
    archive_pb.IMPORT_OUTCOME_KIND_REJECTED: "rejected",
    archive_pb.IMPORT_OUTCOME_KIND_CORRECTED: "corrected",
}


@dataclass
class Page:
    """One page of source jobs: its batches for the archive, what it counts and rejects
    before the archive answers, and the key after it."""

    rows: Sequence[Any]
    after: tuple[dt.datetime, str]
    batches: list[list[archive_pb.OriginalJob]] = field(default_factory=list)
    counts: list[tuple[str, str]] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    sending: asyncio.Task[list[archive_pb.ImportOriginalJobsResponse]] | None = None


class Run:
    """One run's loop over the phases, batch by batch."""

    def __init__(
        self,
        args: argparse.Namespace,
        source: Source,
        stub: ArchiveServiceAsyncStub,
        checkpoint: Checkpoint,
        rejects: Rejects,
    ) -> None:
        self.args = args
        self.source = source
        self.stub = stub
        self.checkpoint = checkpoint
        self.report = checkpoint.report
        self.rejects = rejects
        self.in_flight = IN_FLIGHT_MODES.get(args.in_flight, archive_pb.IN_FLIGHT_HANDLING_QUEUE)
        self.started = time.monotonic() - self.report.elapsed_s

    def _saved(self) -> None:
        self.rejects.flush()
        self.report.elapsed_s = time.monotonic() - self.started
        if not self.args.dry_run:
            self.checkpoint.save()

    async def all(self) -> None:
        """Users, then jobs, then results without a job, then the balances' sum."""
        shape = Shape(
            await self.source.negative_users(),
            await self.source.duplicate_job_ids(),
            await self.source.shared_results(),
        )
        if self.checkpoint.phase == "users":
            await self.users(shape)
            self.checkpoint.phase = "jobs"
            self._saved()
        if self.checkpoint.phase == "jobs":
            await self.jobs(shape)
            self.checkpoint.phase = "orphans"
            self._saved()
        if self.checkpoint.phase == "orphans":
            for row in await self.source.orphan_results(self.args.since):
                self.rejects.write(
                    Reject(
                        "result",
                        "no job names this result",
                        result_id=row["id"],
                        user_id=row["user_id"],
                    )
                )
                self.report.results_without_job += 1
            if not self.args.dry_run:
                self.report.assay_balance_sum = await import_verify.assay_balance_sum(
                    self.source, self.stub
                )
            self.checkpoint.phase = "done"
            self._saved()

    async def users(self, shape: Shape) -> None:
        """Every user's balance, MAX_BATCH at a time."""
        progress = Progress(await self.source.count_users(), "users", not self.args.json)
        while True:
            rows = await self.source.users_page(self.checkpoint.user_after, MAX_BATCH)
            if not rows:
                break
            balances = []
            for row in rows:
                self.report.users["read"] += 1
                self.report.source_balance_sum += int(row["token_balance"])
                if row["id"] in shape.negative_users:
                    self.report.users["rejected"] += 1
                    self.rejects.write(
                        Reject(
                            "user", f"negative balance {row['token_balance']}", user_id=row["id"]
                        )
                    )
                    continue
                balances.append(
                    archive_pb.OriginalBalance(user_id=row["id"], balance=row["token_balance"])
                )
            if balances:
                reply = await self._send([], balances)
                for outcome in reply.balances:
                    kind = KINDS[outcome.kind]
                    self.report.users[kind] += 1
                    if kind == "rejected":
                        self.rejects.write(Reject("user", outcome.reason, user_id=outcome.id))
            self.checkpoint.user_after = rows[-1]["id"]
            self._saved()
            progress.advance(len(rows))
        progress.end()

    async def jobs(self, shape: Shape) -> None:
        """Every job (with ``--since``, those written since and those in flight). A page is
        read and prepared while the archive writes the one before (two processes, two
        cores); its counts and rejects are taken, and the checkpoint moved past it, only once
        the archive has answered for it."""
        counts = await self.source.count_jobs(self.args.since)
        progress = Progress(sum(counts.values()), "jobs ", not self.args.json)
        pending: Page | None = None
        while True:
            rows = await self.source.jobs_page(
                pending.after if pending else self.checkpoint.job_after,
                self.args.since,
                self.args.batch,
            )
            if not rows:
                break
            page = self._prepare(rows, shape)
            if pending is not None:
                await self._finish(pending, progress)
            page.sending = asyncio.create_task(self._send_page(page))
            pending = page
        if pending is not None:
            await self._finish(pending, progress)
        progress.end()

    def _prepare(self, rows: Sequence[Any], shape: Shape) -> Page:
        page = Page(rows, (rows[-1]["created_at"], rows[-1]["job_id"]))
        size = 0
        for row in rows:
            status = row["status"]
            page.counts.append((status, "read"))
            if status in IN_FLIGHT and self.args.in_flight == "leave":
                page.counts.append((status, "left"))
                continue
            job = to_original(row, shape)
            if isinstance(job, Reject):
                page.counts.append((status, "rejected"))
                page.rejects.append(job)
                continue
            if not page.batches or size > MAX_REQUEST_BYTES:
                page.batches.append([])
                size = 0
            page.batches[-1].append(job)
            size += job.ByteSize()
        return page

    async def _send_page(self, page: Page) -> list[archive_pb.ImportOriginalJobsResponse]:
        return [await self._send(batch, []) for batch in page.batches]

    async def _finish(self, page: Page, progress: Progress) -> None:
        """Take a page's outcomes once the archive answered, then move the checkpoint."""
        assert page.sending is not None
        replies = await page.sending
        for status, kind in page.counts:
            self.report.count(status, kind)
        for reject in page.rejects:
            self.rejects.write(reject)
        by_id = {row["job_id"]: row for row in page.rows}
        for batch, reply in zip(page.batches, replies, strict=True):
            for job, outcome in zip(batch, reply.jobs, strict=True):
                kind = KINDS[outcome.kind]
                self.report.count(job.original_status, kind)
                if kind == "rejected":
                    self.rejects.write(reject_of(by_id[job.original_job_id], outcome.reason))
                elif kind == "imported" and job.original_status in IN_FLIGHT and self._failing:
                    self.report.refunded_at_cut_over += 1
        self.checkpoint.job_after = page.after
        self._saved()
        progress.advance(len(page.rows))

    @property
    def _failing(self) -> bool:
        return self.in_flight == archive_pb.IN_FLIGHT_HANDLING_FAIL

    async def _send(
        self, jobs: list[archive_pb.OriginalJob], balances: list[archive_pb.OriginalBalance]
    ) -> archive_pb.ImportOriginalJobsResponse:
        request = archive_pb.ImportOriginalJobsRequest(
            jobs=jobs, balances=balances, in_flight=self.in_flight, dry_run=self.args.dry_run
        )
        reply: archive_pb.ImportOriginalJobsResponse = await self.stub.ImportOriginalJobs(
            request, timeout=RPC_TIMEOUT
        )
        return reply
