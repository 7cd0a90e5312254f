"""The floor under the relay's publishing: what an acknowledged JetStream publish costs on this
machine, against an atomic batch (nats-server 2.12 and later, ADR-50).

``python -m bench.bare_publish [--messages N] [--page P] [--size B] [--rounds R]`` starts a
NATS server with JetStream (file storage, as the stack's) and publishes N messages of B bytes
to one stream in pages of P, each message with its own ``Nats-Msg-Id``, two ways, alternated
R times on fresh streams:

* ``acked``, as the relay publishes: ``publish_async`` for every message, then the page's
  acknowledgements gathered;
* ``counted``: every message acknowledged too, but to one subscription that counts the
  page's acknowledgements (and looks for an error in each) instead of a future and a parsed
  ack per message: what a leaner client than nats-py's ``publish_async`` would cost;
* ``atomic``: the page as one atomic batch (``Nats-Batch-Id``, ``Nats-Batch-Sequence``, and
  ``Nats-Batch-Commit`` on the last), only the first and the last message answered.

It reports, per way, messages/s and the CPU microseconds per message of the publisher (this
process, on uvloop as the services run) and of the server: the relay's whole saving from
batches is the difference, four messages per job.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client
from nats.js.api import StreamConfig

from assaylib.embedded import EmbeddedNats
from assaylib.process import run
from bench import environment
from bench.report import emit

SUBJECTS = 50
"""Subjects the messages spread over, as events spread over their jobs' subjects."""


async def publish_acked(nc: Client, first: int, count: int, payload: bytes) -> None:
    """One page as the relay published it until issue 30's round seven: nats-py's
    publish_async, a future and a parsed acknowledgement per message."""
    js = nc.jetstream()
    acks = [
        await js.publish_async(f"bare.{n % SUBJECTS}", payload, headers={"Nats-Msg-Id": str(n)})
        for n in range(first, first + count)
    ]
    await asyncio.gather(*acks)


async def publish_counted(nc: Client, first: int, count: int, payload: bytes) -> None:
    """One page, every message acknowledged to one inbox subscription that counts them."""
    inbox = nc.new_inbox()
    done = asyncio.Event()
    acked: list[bytes] = []

    async def on_ack(msg: Any) -> None:
        acked.append(msg.data)
        if len(acked) == count:
            done.set()

    subscription = await nc.subscribe(f"{inbox}.*", cb=on_ack)
    try:
        for n in range(first, first + count):
            await nc.publish(
                f"bare.{n % SUBJECTS}",
                payload,
                reply=f"{inbox}.{n}",
                headers={"Nats-Msg-Id": str(n)},
            )
        await asyncio.wait_for(done.wait(), 10)
    finally:
        await subscription.unsubscribe()
    if any(b'"error"' in data for data in acked):
        raise RuntimeError("a publish was refused")


async def publish_atomic(nc: Client, first: int, count: int, payload: bytes) -> None:
    """One page as an atomic batch: the server answers its first message (the batch is open)
    and its commit (the pub ack of the whole batch)."""
    batch = uuid.uuid4().hex
    last = first + count - 1
    for n in range(first, last + 1):
        headers = {
            "Nats-Msg-Id": str(n),
            "Nats-Batch-Id": batch,
            "Nats-Batch-Sequence": str(n - first + 1),
        }
        if n == last:
            headers["Nats-Batch-Commit"] = "1"
        if n in (first, last):
            # the first is answered before the rest go: they must not overtake it
            reply = await nc.request(f"bare.{n % SUBJECTS}", payload, headers=headers, timeout=10)
            if b'"error"' in reply.data:
                raise RuntimeError(f"the atomic batch was refused: {reply.data!r}")
        else:
            await nc.publish(f"bare.{n % SUBJECTS}", payload, headers=headers)


Publisher = Callable[[Client, int, int, bytes], Awaitable[None]]

PUBLISHERS: dict[str, Publisher] = {
    "acked": publish_acked,
    "counted": publish_counted,
    "atomic": publish_atomic,
}
"""The ways a page is published, by name, in the order they alternate."""


async def measure(
    server: EmbeddedNats, way: str, stream: str, args: argparse.Namespace
) -> dict[str, float]:
    """Publish ``args.messages`` one ``way`` to a new stream; its figures."""
    assert server.pid is not None
    nc = await nats.connect(server.url)
    try:
        await nc.jetstream().add_stream(
            StreamConfig(
                name=stream,
                subjects=["bare.>"],  # the previous way's stream is deleted by now
                allow_atomic=True,
                duplicate_window=120,
            )
        )
        publish = PUBLISHERS[way]
        payload = b"x" * args.size
        pids = {"server": server.pid, "publisher": os.getpid()}
        before = environment.CpuSample.take(pids)
        started = time.perf_counter()
        for first in range(0, args.messages, args.page):
            await publish(nc, first, min(args.page, args.messages - first), payload)
        elapsed = time.perf_counter() - started
        cpu = environment.CpuSample.take(pids).since(before)
        stored = (await nc.jetstream().stream_info(stream)).state.messages
        await nc.jetstream().delete_stream(stream)
    finally:
        await nc.close()
    if stored != args.messages:
        raise RuntimeError(f"{way}: the stream holds {stored} of {args.messages} messages")
    return {
        "messages_per_second": args.messages / elapsed,
        "publisher_cpu_us_per_message": 1e6 * cpu["publisher"] / args.messages,
        "server_cpu_us_per_message": 1e6 * cpu["server"] / args.messages,
    }


async def measure_all(server: EmbeddedNats, args: argparse.Namespace) -> dict[str, Any]:
    """Each way ``args.rounds`` times, alternated; the medians."""
    runs: dict[str, list[dict[str, float]]] = {way: [] for way in PUBLISHERS}
    for round_ in range(args.rounds):
        for way in PUBLISHERS:
            runs[way].append(await measure(server, way, f"BARE_{way.upper()}_{round_}", args))
    return {
        way: {key: round(statistics.median(run[key] for run in found), 1) for key in found[0]}
        for way, found in runs.items()
    }


def main() -> None:
    """Start a NATS server, measure, report."""
    parser = argparse.ArgumentParser(prog="python -m bench.bare_publish", description=__doc__)
    parser.add_argument("--messages", type=int, default=40_960)
    parser.add_argument("--page", type=int, default=256, help="messages per page (the relay's)")
    parser.add_argument("--size", type=int, default=600, help="message bytes")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="assay-bare-publish-") as tmp:
        server = EmbeddedNats(Path(tmp))
        server.start()
        try:
            figures = run(measure_all(server, args))
        finally:
            server.stop()
    report = {
        "machine": environment.machine(),
        "messages": args.messages,
        "page": args.page,
        "message_bytes": args.size,
        "rounds": args.rounds,
        **figures,
    }
    emit(report, args.json)


if __name__ == "__main__":
    main()
