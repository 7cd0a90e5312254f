"""The kube-proxy stand-in of `make test-prod-shape`: the one place Service balancing is faked.

A Service's ClusterIP is, here, ``127.0.0.1:<host port>`` (the address book, render.py);
this process listens there and forwards each new TCP connection to the next *ready*
endpoint of that Service, round robin — as kube-proxy's iptables/IPVS rules forward each
new connection to one ready pod. Bytes are copied both ways untouched (gRPC's TLS runs end
to end through it). The runner writes the ready endpoints to a JSON file
(``{"127.0.0.1:41000": ["127.0.0.11:42001", …], …}``), as the EndpointSlice controller
would publish them; this process re-reads it when it changes. An endpoint the runner has
removed gets no new connection; connections already open stay open until either side
closes them (kube-proxy does not cut them either).

Not like kube-proxy: it is one userspace process, so it adds a copy and some CPU per byte;
and a connection to an endpoint that refuses it is retried on the next endpoint (kube-proxy
would send it to the dead pod until the endpoint is removed). Run as
``python -m tools.podkube.proxy ENDPOINTS_FILE``; it exits when its parent does.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

READ_EVERY = 0.1
"""Seconds between looks at the endpoints file."""
CHUNK = 65536


class Proxy:
    """Every Service address in the endpoints file, forwarded to its ready endpoints."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.endpoints: dict[str, list[str]] = {}
        self.turn: dict[str, itertools.count[int]] = {}
        self.servers: dict[str, asyncio.Server] = {}
        self.mtime = 0.0

    async def run(self) -> None:
        """Follow the endpoints file for ever (until the parent exits)."""
        parent = os.getppid()
        while os.getppid() == parent:
            await self.reload()
            await asyncio.sleep(READ_EVERY)

    async def reload(self) -> None:
        """Read the file when it changed; listen on each new Service address."""
        try:
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:
            return
        if mtime == self.mtime:
            return
        self.mtime = mtime
        try:
            endpoints: dict[str, list[str]] = json.loads(self.path.read_text())
        except json.JSONDecodeError:
            self.mtime = 0.0  # a half-written file (the runner replaces it atomically)
            return
        self.endpoints = endpoints
        for address in endpoints:
            if address not in self.servers:
                host, _, port = address.rpartition(":")
                self.turn[address] = itertools.count()
                self.servers[address] = await asyncio.start_server(
                    self.handler(address), host, int(port)
                )

    def handler(
        self, address: str
    ) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
        """The connection handler of one Service address."""

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self.forward(address, reader, writer)

        return handle

    async def forward(
        self, address: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """One client connection to one ready endpoint, bytes copied both ways."""
        upstream = await self.connect(address)
        if upstream is None:
            writer.close()
            return
        up_reader, up_writer = upstream
        await asyncio.gather(
            _copy(reader, up_writer), _copy(up_reader, writer), return_exceptions=True
        )

    async def connect(
        self, address: str
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        """A connection to the next ready endpoint that accepts one, or None."""
        ready = list(self.endpoints.get(address, []))
        for _ in ready:
            target = ready[next(self.turn[address]) % len(ready)]
            host, _, port = target.rpartition(":")
            with contextlib.suppress(OSError):
                return await asyncio.open_connection(host, int(port))
        return None


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(CHUNK):
            writer.write(chunk)
            await writer.drain()
    finally:
        with contextlib.suppress(OSError, RuntimeError):
            writer.close()


def main() -> int:
    """``python -m tools.podkube.proxy ENDPOINTS_FILE``."""
    asyncio.run(Proxy(Path(sys.argv[1])).run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
