"""The outbox relay: publishes committed outbox rows to JetStream, in order, and moves its
cursor past them (outbox rows are written once; migration 0009 explains the cursor).

It wakes right after a transaction that wrote outbox rows commits (with a slow poll as a
safety net), so messages leave right after their transaction: the archive that wrote them
wakes it (``RelayWake``: in process on the replica that relays, else an `assay_outbox`
notification), and any other session's write notifies at commit through the outbox trigger
(migration 0016). Each is
published with `Nats-Msg-Id` = the outbox row id: a crash between publishing and marking
re-publishes, and the stream's duplicate window drops the copy. One relay runs at a time
(a PostgreSQL advisory lock); it reads the cursor when it takes the lock and saves it with
each fetch, so a job's events leave in commit order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

import asyncpg
import nats
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from opentelemetry.trace import SpanKind

from archive_svc import metrics, store
from archive_svc.db import connect, libpq_dsn
from archive_svc.events import publication
from archive_svc.publishing import Message, Pages
from archive_svc.sealing import NO_KEYS, DataKeys
from assaylib import tracing
from assaylib.streams import StreamNames, ensure_streams
from assaylib.tiers import Tiers

log = logging.getLogger(__name__)


class StandingBy(Exception):
    """Another archive replica holds the relay lock; this one waits to take over."""


CHANNEL = "assay_outbox"
PURGE_EVERY = 3600.0  # seconds between purges of published rows
PUBLISH_TIMEOUT = 10.0  # seconds for JetStream to acknowledge one batch
PRIORITY_EVERY = 0.1  # seconds between looks for messages that should not wait behind a backlog
COUNT_EVERY = 1.0  # seconds between counts of a backlog (the count walks all of it)


class OutboxRelay:
    """A long-running loop with start(), stop(), bounded backoff and metrics."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        database_url: str,
        nats_url: str,
        names: StreamNames,
        *,
        events_max_age: float,
        stream_replicas: int = 1,
        batch_size: int = 256,
        poll_interval: float = 2.0,
        max_backoff: float = 5.0,
        data_keys: DataKeys = NO_KEYS,
        tiers: Tiers | None = None,
        queued_per_user: int = 0,
    ) -> None:
        self.pool = pool
        self.database_url = database_url
        self.nats_url = nats_url
        self.names = names
        self.events_max_age = events_max_age
        self.stream_replicas = stream_replicas
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.max_backoff = max_backoff
        self.data_keys = data_keys
        self.tiers = tiers  # a job's queue message goes to its priority's lane
        self.queued_per_user = queued_per_user  # 0: every queue message goes out in turn
        # A user's budget is its lane's weight times queued_per_user: while one busy user of
        # each lane fills the workers, the lanes still share the slots by weight.
        self._budgets = {
            lane.priority: queued_per_user * lane.weight for lane in (tiers.lanes if tiers else ())
        }
        self._most = max(self._budgets.values(), default=queued_per_user)
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._nc: NatsClient | None = None
        self._js: JetStreamContext | None = None
        self._pages: Pages | None = None
        self._listener: asyncpg.Connection | None = None
        self._next_purge = 0.0
        self._position: store.RelayPosition | None = None
        self._next_priority = 0.0
        self._next_count = 0.0
        self._priority_after = 0  # the last seq published ahead of its turn
        self._ahead: set[str] = set()  # rows published ahead, not yet passed in turn
        self._held_users: set[str] = set()  # users with held jobs (read as the lock is taken)

    async def start(self) -> None:
        """Start relaying in the background."""
        self._task = asyncio.create_task(self._run(), name="outbox-relay")

    @property
    def relaying(self) -> bool:
        """Whether this relay holds the lock (it hears no notification of this process's
        own writes: ``RelayWake`` wakes it directly)."""
        return self._listener is not None and not self._listener.is_closed()

    def wake(self) -> None:
        """Publish what has been committed now, without waiting for the poll."""
        self._wake.set()

    async def stop(self) -> None:
        """Stop relaying; unsent rows stay for the next relay."""
        self._stopping.set()
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._disconnect()

    async def _run(self) -> None:
        backoff = 0.1
        standing_by = False
        while not self._stopping.is_set():
            try:
                await self._connect()
                await self._drain()
                backoff, standing_by = 0.1, False
            except StandingBy:
                if not standing_by:
                    log.info("another archive replica relays the outbox; standing by")
                standing_by = True
                await self._sleep(self.max_backoff)
                continue
            except Exception as err:  # any failure: back off, reconnect, retry
                metrics.FAILURES.inc()
                log.warning("outbox relay round failed, retrying in %.1fs: %r", backoff, err)
                await self._disconnect()
                await self._sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff)
                continue
            await self._sleep(self.poll_interval)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)
        self._wake.clear()

    async def _connect(self) -> None:
        if self._listener is None or self._listener.is_closed():
            listener = await connect(libpq_dsn(self.database_url))
            try:
                locked = await listener.fetchval(
                    "SELECT pg_try_advisory_lock($1)", store.RELAY_LOCK_KEY
                )
                if not locked:
                    raise StandingBy()
                await listener.add_listener(CHANNEL, lambda *_: self._wake.set())
                self._position = await store.relay_position(listener)
                if self.queued_per_user:
                    self._held_users = await store.held_users(listener)
            except BaseException:
                await listener.close()
                raise
            self._listener = listener
        if self._nc is None or not self._nc.is_connected:
            self._nc = await nats.connect(
                self.nats_url,
                connect_timeout=2,
                max_reconnect_attempts=3,
                reconnect_time_wait=0.5,
                allow_reconnect=True,
            )
            self._js = self._nc.jetstream()
            self._pages = Pages(self._nc, PUBLISH_TIMEOUT)
            await self._pages.start()
            await ensure_streams(
                self._js,
                self.names,
                events_max_age=self.events_max_age,
                replicas=self.stream_replicas,
            )

    async def _disconnect(self) -> None:
        listener, self._listener, self._position = self._listener, None, None
        if listener is not None and not listener.is_closed():
            with contextlib.suppress(Exception):
                await listener.close(timeout=2)
        nc, self._nc, self._js, self._pages = self._nc, None, None, None
        if nc is not None and not nc.is_closed:
            with contextlib.suppress(Exception):
                await nc.close()

    async def _drain(self) -> None:
        """Publish until the outbox is empty: each round saves the position reached and
        fetches the next page in one statement."""
        assert self._pages is not None and self._position is not None
        pages = self._pages
        backlogged = False
        while not self._stopping.is_set():
            if backlogged and (self.tiers is not None or self.queued_per_user):
                # Before the position is saved again (erasure waits for that save), so a
                # message read here is out before an erasure walks the stream.
                await self._publish_priority(pages)
            fresh = self._position.batch is None  # this round takes a new snapshot
            at, rows = await store.next_unsent(self.pool, self._position, self.batch_size)
            backlogged = len(rows) == self.batch_size
            if rows:
                if len(rows) == self.batch_size:  # a backlog: count it, now and then
                    await self._count_backlog()
                sending = await self._hold_over_budget(rows)
                await self._publish(pages, sending)
                metrics.PUBLISHED.inc(len(sending))
            self._position = at.advanced(rows, self.batch_size)
            if not rows and fresh:  # nothing committed since the last snapshot
                if await self._release():
                    continue  # their queue messages are in the outbox now
                metrics.UNSENT.set(0)
                await self._purge()
                return
        # stopping: save what went out, so the next relay does not send it again
        await store.save_position(self.pool, self._position)

    async def _hold_over_budget(self, rows: Sequence[asyncpg.Record]) -> list[asyncpg.Record]:
        """The page's rows to publish now: all but those published ahead of their turn (in
        the stream already) and the queue messages held back, each of a user with more than
        its budget of jobs queued in the stream (the whole page's share of that user: the
        release gives the budget back in turn) or held already (a page read again after a
        restart). Holds are committed before anything is published, so a restart finds
        them."""
        withheld: set[str] = set()
        candidates: list[asyncpg.Record] = []
        for row in rows:
            if row["kind"] != "job":
                continue
            outbox_id = str(row["id"])
            if row["queue_held_by"] is not None:  # this row's hold, read again (or an earlier)
                withheld.add(outbox_id)
                self._held_users.add(row["user_id"])
            elif outbox_id in self._ahead:
                self._ahead.discard(outbox_id)
                withheld.add(outbox_id)
            elif self.queued_per_user:
                candidates.append(row)
        over: list[asyncpg.Record] = []
        if candidates:  # one count per user of the page, up to one past the largest budget
            users = sorted({row["user_id"] for row in candidates})
            queued = await store.in_stream(self.pool, users, self._most + 1)
            over = [
                row
                for row in candidates
                if queued.get(row["user_id"], 0) > self._budget(row["priority"])
            ]
        if over:
            # before the hold commits: a failure after it must not leave them unreleased
            self._held_users.update(row["user_id"] for row in over)
            marked = await store.hold(self.pool, over)
            withheld |= {str(row["id"]) for row in over}
            metrics.HELD.inc(len(marked))
        return [row for row in rows if str(row["id"]) not in withheld]

    async def _count_backlog(self) -> None:
        """Set the backlog's gauge, at most every COUNT_EVERY seconds: the count walks every
        unpublished row (27 ms behind 4,000 on the bench, once per page)."""
        now = asyncio.get_running_loop().time()
        if now >= self._next_count:
            self._next_count = now + COUNT_EVERY
            metrics.UNSENT.set(await store.count_unsent(self.pool))

    def _budget(self, priority: int) -> int:
        """Jobs of a user of this lane that may be queued in the stream at once."""
        return self._budgets.get(priority, self.queued_per_user)

    async def _release(self) -> int:
        """Release held jobs with room under the budget (their queue messages join the
        outbox); 0 when none could go."""
        if not self.queued_per_user or not self._held_users:
            return 0
        users = sorted(self._held_users)
        released = await store.release_held(
            self.pool, users, self.queued_per_user, self._budgets, self.batch_size
        )
        if released:
            metrics.RELEASED.inc(released)
        else:  # no room anywhere: forget the users with nothing held any more
            self._held_users = await store.held_users(self.pool, users)
        return released

    async def _publish_priority(self, pages: Pages) -> None:
        """Publish the queue messages waiting behind a backlog that should not wait, at most
        every PRIORITY_EVERY seconds (``store.ahead_unsent``: the higher lanes', and with a
        per-user budget every user's within it): a premium job, or a pupil's one job, does
        not wait for the thousands of rows a school's batch committed before it. Their turn in
        order skips them (a relay restarted in between publishes them again, a copy the
        stream drops: the same Nats-Msg-Id, within its duplicate window)."""
        now = asyncio.get_running_loop().time()
        if now < self._next_priority:
            return
        self._next_priority = now + PRIORITY_EVERY
        rows = await store.ahead_unsent(
            self.pool, self._priority_after, self.batch_size, self.queued_per_user, self._budgets
        )
        if rows:
            await self._publish(pages, rows)
            self._priority_after = int(rows[-1]["seq"])
            self._ahead.update(str(row["id"]) for row in rows)
            metrics.PUBLISHED_AHEAD.inc(len(rows))

    async def _purge(self) -> None:
        # Published rows are kept as long as the events stream keeps their events.
        now = asyncio.get_running_loop().time()
        if now < self._next_purge:
            return
        self._next_purge = now + PURGE_EVERY
        metrics.PURGED.inc(await store.purge_sent(self.pool, self.events_max_age))

    async def _publish(self, pages: Pages, rows: Sequence[asyncpg.Record]) -> None:
        # Sent in order, every message acknowledged (archive_svc.publishing): the stream
        # receives the page in outbox order, and the Nats-Msg-Id drops a copy a crash made us
        # send again.
        # A message about a traced job carries the job's trace: the publish is a span of it
        # (when tracing is on here), and its traceparent header lets the reader join it.
        messages: list[Message] = []
        for row in rows:
            subject, payload = publication(self.names, row, self.data_keys, self.tiers)
            headers = {"Nats-Msg-Id": str(row["id"])}
            trace_context = row["trace_context"]
            if trace_context:
                with tracing.span(
                    f"publish {row['event_type'] or 'analysis job'}",
                    __name__,
                    parent=trace_context,
                    kind=SpanKind.PRODUCER,
                    attributes={
                        "assay.job_id": str(row["job_id"]),
                        "messaging.destination": subject,
                    },
                ):
                    headers["traceparent"] = tracing.traceparent() or trace_context
            messages.append((subject, payload, headers))
        await pages.publish(messages)


class RelayWake:
    """Wakes the relay after this archive committed outbox rows: the local relay directly when
    it holds the lock, else whichever replica does with an `assay_outbox` notification of
    its own transaction. That transaction writes nothing, so the notification queue's lock it
    takes is held for no WAL flush (migration 0016 says why a writing transaction should not
    notify). Notifications coalesce: while one is in flight, any number of writes send one
    more after it, so the relay's round after the last write sees every row."""

    def __init__(self, pool: asyncpg.Pool, relay: OutboxRelay) -> None:
        self.pool = pool
        self.relay = relay
        self._sending: asyncio.Task[None] | None = None
        self._again = False

    def written(self) -> None:
        """Outbox rows were committed a moment ago."""
        if self.relay.relaying:
            self.relay.wake()
        elif self._sending is not None:
            self._again = True
        else:
            self._sending = asyncio.get_running_loop().create_task(
                self._notify(), name="outbox-wake"
            )

    async def close(self) -> None:
        """Wait for a notification in flight."""
        if self._sending is not None:
            with contextlib.suppress(Exception):
                await self._sending

    async def _notify(self) -> None:
        try:
            again = True
            while again:
                self._again = False
                await self.pool.execute("SELECT pg_notify($1, '')", CHANNEL)
                again = self._again
        except Exception as err:  # the relay's poll publishes the rows a little later
            log.warning("could not wake the outbox relay: %r", err)
        finally:
            self._sending = None
