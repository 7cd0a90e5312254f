"""Steady load through ``assay-client`` while the cluster rolls: submitters with request ids
(one user each, paced), and watchers with cursor stores (one per user, and an operator's over
everyone) that record every event they are given. Each submission is tagged with the phase
running when it started, so its latency is reported per phase."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import grpc.aio
from assay_client import AssayClient, AssayError

from assay.archive.v1 import archive_service_pb2 as archive_pb
from assay.archive.v1 import archive_service_pb2_grpc as archive_grpc
from assaylib.auth import bearer_token_interceptors
from bench.load import sample
from tools.upgrade.cluster import Cluster

GRANT = 100_000


@dataclass
class Call:
    """One submission as the caller saw it, after the client's own retries."""

    phase: str
    request_id: str
    user: str
    seconds: float
    job_id: str = ""
    error: str = ""


class MemoryCursors:
    """A cursor store in memory (the client's ``CursorStore``): resumes across reconnects."""

    def __init__(self) -> None:
        self.cursor: int | None = None

    def load(self) -> int | None:
        """The last cursor saved."""
        return self.cursor

    def save(self, cursor: int) -> None:
        """Remember ``cursor``."""
        self.cursor = cursor


@dataclass
class Seen:
    """What one watcher was given: per job, the (version, event type) of each event in order."""

    user: str
    jobs: dict[str, list[tuple[int, str]]] = field(default_factory=lambda: defaultdict(list))
    kinds: Counter[str] = field(default_factory=Counter)
    error: str = ""


@dataclass
class Traffic:
    """The load: ``users`` submitters at ``rate`` submissions per second each, watchers."""

    cluster: Cluster
    users: int = 4
    rate: float = 2.5
    phase: str = "steady"
    calls: list[Call] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _clients: list[AssayClient] = field(default_factory=list)

    def user(self, index: int) -> str:
        """The load's users."""
        return f"upgrade-user-{index}"

    def client(self, token: str) -> AssayClient:
        """A client over every assessment and notifier slot (round robin)."""
        client = AssayClient(
            self.cluster.targets("assessment"),
            notifier_addr=self.cluster.targets("notifier"),
            token=token,
            timeout=10.0,
        )
        self._clients.append(client)
        return client

    async def grant(self) -> None:
        """Fund every user (through the archive, as an operator)."""
        channel = grpc.aio.insecure_channel(
            f"ipv4:{self.cluster.targets('archive')}",
            options=[("grpc.lb_policy_name", "round_robin")],
            interceptors=bearer_token_interceptors(self.cluster.operator_token),
        )
        async with channel:
            stub = archive_grpc.ArchiveServiceStub(channel)
            for index in range(self.users):
                request = archive_pb.GrantTokensRequest(
                    user_id=self.user(index), amount=GRANT, reason="upgrade test"
                )
                await stub.GrantTokens(request, timeout=30)

    async def start(self) -> None:
        """Open the watchers (returns once each is live), then start the submitters."""
        live: list[asyncio.Event] = []
        scopes = [self.user(i) for i in range(self.users)] + [""]
        for user in scopes:
            token = self.cluster.user_token(user) if user else self.cluster.operator_token
            seen = Seen(user)
            self.seen.append(seen)
            ready = asyncio.Event()
            live.append(ready)
            self._tasks.append(asyncio.create_task(self._watch(self.client(token), seen, ready)))
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in live)), 60)
        for index in range(self.users):
            client = self.client(self.cluster.user_token(self.user(index)))
            self._tasks.append(asyncio.create_task(self._submit(client, index)))

    async def _watch(self, client: AssayClient, seen: Seen, ready: asyncio.Event) -> None:
        try:
            watch = client.watch(user_id=seen.user, cursor_store=MemoryCursors(), bookmarks=True)
            async for item in watch:
                seen.kinds[item.kind] += 1
                if item.kind == "bookmark":
                    ready.set()
                elif item.kind == "event" and item.event is not None:
                    event = item.event
                    seen.jobs[event.job_id].append((event.job_version, event.event_type))
        except AssayError as err:  # a fatal error: the watch cannot go on
            seen.error = f"{type(err).__name__}: {err}"
            ready.set()

    async def _submit(self, client: AssayClient, index: int) -> None:
        user = self.user(index)
        interval = 1.0 / self.rate
        due = time.monotonic() + index * interval / self.users  # spread the users' ticks
        number = index
        while not self._stop.is_set():
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            due += interval
            number += self.users
            call = Call(self.phase, uuid.uuid4().hex, user, 0.0)
            started = time.perf_counter()
            try:
                reply = await client.submit(sample(number), request_id=call.request_id)
                call.job_id = reply.job.job_id
            except AssayError as err:
                call.error = f"{type(err).__name__}: {err}"
            call.seconds = time.perf_counter() - started
            self.calls.append(call)

    async def stop_submitting(self) -> None:
        """Stop the submitters (each finishes the call it is making)."""
        self._stop.set()
        submitters = self._tasks[len(self.seen) :]
        await asyncio.gather(*submitters)

    async def close(self) -> None:
        """Stop everything and close the clients."""
        self._stop.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for client in self._clients:
            await client.close()
