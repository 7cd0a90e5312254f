"""Erasing a user's personal data (EraseUserData), and the retention's erasure of old results.

An erasure is a sequence of batched steps, each batch one transaction that also counts what it
erased in the erasure log, then a final "done" mark:

1. cancel the user's QUEUED and PROCESSING jobs through the state machine (row ``erase``:
   refunded, one ``analysis.cancelled`` event each), so no worker writes a profile afterwards;
2. empty their result rows (test_data, raw_responses, test_result) and mark them erased;
3. delete their jobs' queue messages from the outbox (one stored before migration 0012 holds
   its data; later ones are built from the result row when relayed);
4. delete their messages still on the jobs stream (JetStream erases the bytes), once the relay
   has begun a round after step 3 (a message it fetched before is published by then);
5. mark the erasure finished.

Steps 1–3 repeat until a round finds nothing in flight and nothing kept (a job retried or
submitted meanwhile is caught by the next round). Every step finds its own remaining work, so
an erasure interrupted anywhere (kill -9, a lost connection) is finished by repeating the
request with the same request_id; a finished one answers the same again. Job rows and the
ledger stay, under the user id: accounting and the invariants need them, and they hold no
answers or profile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import asyncpg
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from archive_svc import convert, metrics, store
from archive_svc.states import ERASE
from archive_svc.store.transitions import Operation, Rule
from assay.archive.v1 import archive_service_pb2 as pb
from assay.events.v1 import events_pb2
from assaylib import validation as v
from assaylib.auth import current_principal
from assaylib.errors import AlreadyExists, Unavailable
from assaylib.streams import NATS_TRANSIENT, StreamNames

log = logging.getLogger(__name__)

BATCH = 500
"""Jobs cancelled, result rows emptied or outbox rows deleted per transaction."""
WALKERS = 16
"""Concurrent readers of the jobs stream when deleting a user's queue messages."""
RETENTION_BATCHES = 20
"""Batches one sweep's retention pass erases at most (10,000 rows with the sweep's 500)."""
RELAY_WAIT = 5.0
"""Seconds step 4 waits for the relay to finish a publication it began before step 3."""
MAX_ROUNDS = 5
"""Rounds of steps 1–3 before giving up on a user whose jobs keep changing (retry later)."""
ERASE_OP = Operation("erase", (Rule(ERASE),), (("user_id", "text"),), scan="j.job_id")


class Erasure:
    """EraseUserData: a user's data erased in resumable, batched steps."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        jetstream: Callable[[], Awaitable[JetStreamContext]],
        names: StreamNames,
        batch: int = BATCH,
    ) -> None:
        self.pool = pool
        self.jetstream = jetstream
        self.names = names
        self.batch = batch

    async def erase_user(self, request: pb.EraseUserDataRequest) -> pb.EraseUserDataResponse:
        """Erase a user's data, or answer a repeat of a finished erasure the same way."""
        v.require_valid(
            v.id_violations(request.user_id, "user_id")
            + v.id_violations(request.request_id, "request_id")
        )
        user_id, request_id = request.user_id, request.request_id
        principal = current_principal()
        begun = await store.begin_erasure(
            self.pool, request_id, user_id, "request", principal.user_id
        )
        if begun["user_id"] != user_id:
            raise AlreadyExists(f"request_id {request_id!r} was already used for another erasure")
        if begun["finished_at"] is not None:
            return reply(begun, replayed=True)
        extra = {"request_id": request_id, "erasure_user": user_id}
        log.info(
            "erasure %s by %s",
            "started" if begun["added"] else "resumed",
            principal.user_id,
            extra=extra,
        )
        await self._erase_rows(request_id, user_id)
        await self._erase_queue_messages(request_id, user_id)
        done = await store.finish_erasure(self.pool, request_id)
        if done["finished_now"]:
            metrics.ERASURES.labels("request").inc()
            log.info(
                "erasure finished: %d job(s) cancelled, %d result(s) erased, %d outbox and %d"
                " stream message(s) deleted",
                done["jobs_cancelled"],
                done["results_erased"],
                done["outbox_messages_erased"],
                done["queue_messages_deleted"],
                extra=extra,
            )
        return reply(done)

    async def _erase_rows(self, request_id: str, user_id: str) -> None:
        """Steps 1–3, round after round until the user has nothing in flight or kept."""
        for _ in range(MAX_ROUNDS):
            await self._cancel_in_flight(request_id, user_id)
            await self._batches(request_id, "results_erased", store.erase_user_results, user_id)
            await self._batches(
                request_id, "outbox_messages_erased", store.erase_user_queue_messages, user_id
            )
            remaining = await store.user_remaining(self.pool, user_id)
            if not remaining["in_flight"] and not remaining["kept"]:
                return
        raise Unavailable(
            f"user {user_id}'s jobs kept changing during the erasure; repeat it (same"
            " request_id) to finish"
        )

    async def _cancel_in_flight(self, request_id: str, user_id: str) -> None:
        params = [{"user_id": user_id}]
        while True:
            async with self.pool.acquire() as conn, conn.transaction():
                applied = await store.apply(conn, ERASE_OP, params, limit=self.batch)
                cancelled = [a for a in applied if a.rule is not None]
                await store.count_erased(conn, request_id, "jobs_cancelled", len(cancelled))
            for outcome in cancelled:
                metrics.count_transition(outcome.rule or "", outcome.previous_status, outcome.job)
            if len(applied) < self.batch:
                return

    async def _batches(
        self,
        request_id: str,
        column: str,
        statement: Callable[[asyncpg.Connection, str, int], Awaitable[int]],
        user_id: str,
    ) -> None:
        while True:
            async with self.pool.acquire() as conn, conn.transaction():
                erased = await statement(conn, user_id, self.batch)
                await store.count_erased(conn, request_id, column, erased)
            if column == "results_erased":
                metrics.RESULTS_ERASED.labels("request").inc(erased)
            if erased < self.batch:
                return

    async def _erase_queue_messages(self, request_id: str, user_id: str) -> None:
        """Step 4: the user's messages still on the jobs stream (jobs nobody started, now
        cancelled) are deleted; JetStream overwrites their bytes."""
        job_ids = {str(job) for job in await store.user_job_ids(self.pool, user_id)}
        if not job_ids:
            return
        await self._relay_past_deletions()
        try:
            deleted = await delete_stream_messages(await self.jetstream(), self.names, job_ids)
        except NATS_TRANSIENT as err:
            raise Unavailable(
                "the jobs stream could not be cleaned now; repeat the erasure to finish it"
            ) from err
        await store.count_erased(self.pool, request_id, "queue_messages_deleted", deleted)

    async def _relay_past_deletions(self) -> None:
        """Wait until the relay has begun a round after step 3 committed. A round it began
        before may have fetched a queue message (with the user's data) that step 3 then
        deleted, and could publish it after step 4 walked the stream; the relay's rounds
        run one after another, so a round that began later means that one is out."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RELAY_WAIT
        marker = await store.relay_marker(self.pool)
        while not await store.relay_passed(self.pool, marker):
            if loop.time() > deadline:  # no relay holds the lock, or it is stuck on NATS
                log.warning("erasure: the outbox relay did not come round; going on")
                return
            await asyncio.sleep(0.01)


async def delete_stream_messages(
    js: JetStreamContext, names: StreamNames, job_ids: set[str]
) -> int:
    """Delete the analysis messages of ``job_ids`` from the jobs stream; returns how many.
    The stream holds only messages no worker has acknowledged yet; its sequence range is
    walked by WALKERS concurrent readers, one slice each (a read is one round trip)."""
    try:
        state = (await js.stream_info(names.jobs_stream)).state
    except NotFoundError:
        return 0
    if not state.messages:
        return 0
    first, last = state.first_seq, state.last_seq
    size = max(1, -(-(last - first + 1) // WALKERS))
    walks = [
        _delete_in_slice(js, names, job_ids, begin, min(begin + size - 1, last))
        for begin in range(first, last + 1, size)
    ]
    return sum(await asyncio.gather(*walks))


async def _delete_in_slice(
    js: JetStreamContext, names: StreamNames, job_ids: set[str], seq: int, last: int
) -> int:
    deleted = 0
    while seq <= last:
        try:
            found = await js.get_msg(names.jobs_stream, seq, subject=names.jobs_subjects, next=True)
        except NotFoundError:  # no message at or after seq
            break
        assert found.seq is not None
        if found.seq > last:
            break
        seq = found.seq + 1
        try:
            job_id = events_pb2.AnalysisJobMessage.FromString(found.data or b"").job_id
        except Exception:  # not ours to judge; the worker terminates what it cannot read
            continue
        if job_id in job_ids:
            with contextlib.suppress(NotFoundError):  # a worker acknowledged it meanwhile
                await js.delete_msg(names.jobs_stream, found.seq)
                deleted += 1
    return deleted


def reply(row: asyncpg.Record, *, replayed: bool = False) -> pb.EraseUserDataResponse:
    """The erasure log's record as a reply."""
    response = pb.EraseUserDataResponse(
        user_id=row["user_id"] or "",
        request_id=row["request_id"],
        jobs_cancelled=row["jobs_cancelled"],
        results_erased=row["results_erased"],
        outbox_messages_erased=row["outbox_messages_erased"],
        queue_messages_deleted=row["queue_messages_deleted"],
        requested_by=row["requested_by"],
        requested_at=convert.stamp(row["requested_at"]),
        replayed=replayed,
    )
    if row["finished_at"] is not None:
        response.finished_at.CopyFrom(convert.stamp(row["finished_at"]))
    return response


async def expire_results(
    conn: asyncpg.Connection, retention: float, batch: int, requested_by: str, request_id: str
) -> int:
    """The retention pass: empty the results of terminal jobs that finished more than
    ``retention`` seconds ago, batch after batch (one transaction each, counted in the erasure
    log under ``request_id``), at most RETENTION_BATCHES of them so a sweep stays within its
    deadline (the next sweep goes on); returns how many. Runs on the sweep's locked session."""
    expired = 0
    logged = False
    for _ in range(RETENTION_BATCHES):
        async with conn.transaction():
            erased = await store.expire_results(conn, retention, batch)
            if erased["results"] and not logged:
                await store.log_retention(conn, request_id, requested_by)
                logged = True
            if logged:
                await store.count_erased(conn, request_id, "results_erased", erased["results"])
                await store.count_erased(
                    conn, request_id, "outbox_messages_erased", erased["outbox"]
                )
        expired += erased["results"]
        metrics.RESULTS_ERASED.labels("retention").inc(erased["results"])
        if erased["results"] < batch:
            break
    if logged:
        await store.finish_erasure(conn, request_id)
        metrics.ERASURES.labels("retention").inc()
    return expired
