"""The floor under a hop: the CPU a bare grpc.aio unary call costs on this machine.

``python -m bench.bare_unary [--calls N] [--concurrency C] [--size B]`` makes N calls of
``/bench.Bare/Echo`` (``bench.bare_stream``, a server that returns the request and does
nothing else) from C concurrent callers on one channel, both ends on uvloop as the services
run, and reports the calls/s and the CPU microseconds per call of the server and of the
caller. A submission crosses one such call whole (its caller to the assessment service) and
shares batched ones (assessment to archive, worker to archive): this is what each costs
before Assay does anything.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from typing import Any

import grpc.aio

from assaylib.process import run
from bench import bare_stream, environment
from bench.report import emit


async def measure(address: str, server_pid: int, args: argparse.Namespace) -> dict[str, Any]:
    """Warm the channel, then time ``args.calls`` calls; the figures."""
    channel = grpc.aio.insecure_channel(address)
    echo = channel.unary_unary(
        bare_stream.ECHO, request_serializer=bytes, response_deserializer=bytes
    )
    payload = b"x" * args.size
    try:
        for _ in range(200):  # connected, and past the first calls' setup
            await echo(payload)
        pending = iter(range(args.calls))

        async def caller() -> None:
            for _ in pending:
                await echo(payload)

        pids = {"server": server_pid, "caller": os.getpid()}
        before = environment.CpuSample.take(pids)
        started = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(args.concurrency)))
        elapsed = time.perf_counter() - started
        cpu = environment.CpuSample.take(pids).since(before)
    finally:
        await channel.close()
    return {
        "calls": args.calls,
        "concurrency": args.concurrency,
        "request_bytes": args.size,
        "calls_per_second": round(args.calls / elapsed, 1),
        "server_cpu_us_per_call": round(1e6 * cpu["server"] / args.calls, 1),
        "caller_cpu_us_per_call": round(1e6 * cpu["caller"] / args.calls, 1),
    }


def main() -> None:
    """Start the bare server, measure, report."""
    parser = argparse.ArgumentParser(prog="python -m bench.bare_unary", description=__doc__)
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--size", type=int, default=600, help="request bytes (a submission's)")
    parser.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    args = parser.parse_args()
    with bare_stream.running() as (pid, address):
        figures = run(measure(address, pid, args))
    emit({"machine": environment.machine(), **figures}, args.json)


if __name__ == "__main__":
    main()
