"""The floor under a watcher's memory, and under a unary call's CPU: a bare grpc.aio server.

``python -m bench.bare_stream PORT`` serves two methods on uvloop, as the services run. Each
``/bench.Bare/Hold`` call sends one message (the stream is live) and then waits until the
caller hangs up, holding nothing of its own. ``python -m bench watchers`` opens as many of
these as it opened WatchJobs streams, in the same run, and reports the memory of each beside
the notifier's: what remains above it is the notifier's own. ``/bench.Bare/Echo`` answers a
unary call with its request: ``python -m bench.bare_unary`` times it.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import grpc.aio

from assaylib.embedded import free_port
from assaylib.process import run

METHOD = "/bench.Bare/Hold"
ECHO = "/bench.Bare/Echo"
LIVE = b"live"


async def _hold(
    request: bytes, context: grpc.aio.ServicerContext[Any, Any]
) -> AsyncIterator[bytes]:
    yield LIVE
    await asyncio.Event().wait()  # until the caller hangs up (the call is cancelled)


async def _echo(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    return request


async def serve(port: int) -> None:
    """Serve ``/bench.Bare/Hold`` and ``/bench.Bare/Echo`` on 127.0.0.1:``port`` until
    killed."""
    server = grpc.aio.server()
    handlers = {
        "Hold": grpc.unary_stream_rpc_method_handler(
            _hold, request_deserializer=bytes, response_serializer=bytes
        ),
        "Echo": grpc.unary_unary_rpc_method_handler(
            _echo, request_deserializer=bytes, response_serializer=bytes
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("bench.Bare", handlers),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print("ready", flush=True)
    await server.wait_for_termination()


@contextlib.contextmanager
def running() -> Iterator[tuple[int, str]]:
    """A bare server in a process of its own: (its pid, its address)."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.bare_stream", str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        if process.stdout.readline().strip() != "ready":
            raise RuntimeError("the bare stream server did not start")
        yield process.pid, f"127.0.0.1:{port}"
    finally:
        process.kill()
        process.wait()


async def hold(channel: grpc.aio.Channel, opened: list[grpc.aio.Call]) -> None:
    """Open one idle stream on ``channel`` and wait until it is live."""
    call = channel.unary_stream(METHOD, request_serializer=bytes, response_deserializer=bytes)(b"")
    opened.append(call)
    await call.read()


if __name__ == "__main__":
    run(serve(int(sys.argv[1])))
