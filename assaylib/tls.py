"""TLS from PEM files that are renewed in place (cert-manager, through a mounted Secret).

A renewed certificate is picked up without a restart, on both ends:

* servers: ``server_credentials`` gives gRPC a certificate *fetcher*, which gRPC calls
  before each TLS handshake; it re-reads the files only when one changed (their inode,
  size and mtime — the kubelet swaps a Secret volume's files atomically), so every
  connection made after a renewal is served with the new certificate, and connections
  already open keep theirs.
* clients: ``ReloadingChannel`` opens a new channel when its files (the CA bundle, and its
  own certificate and key for mutual TLS) changed, checked at most every ``CHECK_EVERY``
  seconds as calls are made; calls already under way finish on the old channel, which is
  closed after ``OLD_CHANNEL_GRACE`` seconds.

A half-renewed pair (a certificate whose key is not there yet) is refused: the old
credentials stay in use and the files are read again on the next handshake or call.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
from cryptography import x509
from cryptography.hazmat.primitives import serialization

__all__ = [
    "CHECK_EVERY",
    "FileState",
    "ReloadingChannel",
    "ServerCertificates",
    "server_credentials",
]

CHECK_EVERY = 1.0
"""Seconds between a client's looks at its files (each look is a few stat calls)."""
OLD_CHANNEL_GRACE = 30.0
"""Seconds calls under way get on a replaced channel before it is closed."""

log = logging.getLogger(__name__)


class FileState:
    """What identifies the current content of some files: (inode, size, mtime) of each."""

    def __init__(self, paths: Sequence[str]) -> None:
        self.paths = [p for p in paths if p]
        self.seen = self.now()

    def now(self) -> tuple[tuple[int, int, int], ...]:
        """The files' identity now (a missing file counts as changed when it comes back)."""
        states = []
        for path in self.paths:
            try:
                stat = os.stat(path)  # follows the kubelet's ..data symlinks
            except OSError:
                states.append((0, 0, 0))
                continue
            states.append((stat.st_ino, stat.st_size, stat.st_mtime_ns))
        return tuple(states)

    def changed(self) -> bool:
        """Whether any file changed since the last call that said so (or since made)."""
        now = self.now()
        if now == self.seen:
            return False
        self.seen = now
        return True


def _matching_pair(key_pem: bytes, cert_pem: bytes) -> bool:
    """Whether the first certificate in ``cert_pem`` is for the private key ``key_pem``."""
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
        cert = x509.load_pem_x509_certificate(cert_pem)
    except (ValueError, TypeError):
        return False
    fmt = serialization.PublicFormat.SubjectPublicKeyInfo
    enc = serialization.Encoding.DER
    return bool(key.public_key().public_bytes(enc, fmt) == cert.public_key().public_bytes(enc, fmt))


class ServerCertificates:
    """A server's certificate, key and (for mutual TLS) client CA, re-read when changed."""

    def __init__(self, cert: str, key: str, ca: str = "") -> None:
        self.cert, self.key, self.ca = cert, key, ca
        self.files = FileState([cert, key, ca])
        self.serial = 0
        initial = self._load()
        if initial is None:
            raise ValueError(f"{cert} is not a certificate for the key in {key}")
        self.initial: grpc.ServerCertificateConfiguration = initial

    def _load(self) -> grpc.ServerCertificateConfiguration | None:
        key, cert = Path(self.key).read_bytes(), Path(self.cert).read_bytes()
        if not _matching_pair(key, cert):
            return None
        self.serial = x509.load_pem_x509_certificate(cert).serial_number
        root = Path(self.ca).read_bytes() if self.ca else None
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=root)

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """gRPC's fetcher: a new configuration when the files changed, else None (keep)."""
        if not self.files.changed():
            return None
        try:
            config = self._load()
        except OSError as err:
            config, reason = None, str(err)
        else:
            reason = "the certificate does not match the key (yet)"
        if config is None:
            log.warning("TLS certificate %s changed but is not usable: %s", self.cert, reason)
            self.files.seen = ()  # read again on the next handshake
            return None
        log.info("TLS certificate reloaded from %s (serial %x)", self.cert, self.serial)
        return config


def server_credentials(cert: str, key: str, ca: str = "") -> grpc.ServerCredentials:
    """Server credentials that follow renewals of the files; client certificates (signed
    by ``ca``) required when ``ca`` is given."""
    certificates = ServerCertificates(cert, key, ca)
    # gRPC's fetcher may return None ("unchanged"); its stubs say it may not.
    fetch: Callable[[], grpc.ServerCertificateConfiguration] = certificates.fetch  # type: ignore[assignment]
    return grpc.dynamic_ssl_server_credentials(
        certificates.initial, fetch, require_client_authentication=bool(ca)
    )


class ReloadingChannel(grpc.aio.Channel):
    """A channel made by ``open`` again whenever the files ``paths`` change."""

    def __init__(self, open_: Callable[[], grpc.aio.Channel], paths: Sequence[str]) -> None:
        self._open = open_
        self._files = FileState(paths)
        self._channel = open_()
        self._checked = time.monotonic()
        self._retired: set[asyncio.Task[None]] = set()

    def current(self) -> grpc.aio.Channel:
        """The channel for a new call (a new one when the files changed)."""
        now = time.monotonic()
        if now - self._checked >= CHECK_EVERY:
            self._checked = now
            if self._files.changed():
                old, self._channel = self._channel, self._open()
                log.info("TLS files changed: new connections use them (%s)", self._files.paths)
                task = asyncio.get_running_loop().create_task(old.close(OLD_CHANNEL_GRACE))
                self._retired.add(task)
                task.add_done_callback(self._retired.discard)
        return self._channel

    def unary_unary(self, method: str, *args: Any, **options: Any) -> Any:
        """A multicallable that runs each call on the current channel."""
        return _OnCurrent(self, "unary_unary", method, args, options)

    def unary_stream(self, method: str, *args: Any, **options: Any) -> Any:
        """A multicallable that runs each call on the current channel."""
        return _OnCurrent(self, "unary_stream", method, args, options)

    def stream_unary(self, method: str, *args: Any, **options: Any) -> Any:
        """A multicallable that runs each call on the current channel."""
        return _OnCurrent(self, "stream_unary", method, args, options)

    def stream_stream(self, method: str, *args: Any, **options: Any) -> Any:
        """A multicallable that runs each call on the current channel."""
        return _OnCurrent(self, "stream_stream", method, args, options)

    async def close(self, grace: float | None = None) -> None:
        """Close the channel (and any replaced one still finishing calls)."""
        await self._channel.close(grace)
        for task in list(self._retired):
            task.cancel()

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        """The current channel's connectivity."""
        return self._channel.get_state(try_to_connect)

    async def wait_for_state_change(self, last_observed_state: grpc.ChannelConnectivity) -> None:
        """Wait until the current channel's connectivity changes."""
        await self._channel.wait_for_state_change(last_observed_state)

    async def channel_ready(self) -> None:
        """Wait until the current channel is READY."""
        await self._channel.channel_ready()

    async def __aenter__(self) -> ReloadingChannel:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close(None)


class _OnCurrent:
    """A multicallable of ``ReloadingChannel``: made again on a new channel when it changes."""

    __slots__ = ("_args", "_call", "_channel", "_kind", "_method", "_on", "_options")

    def __init__(
        self, channel: ReloadingChannel, kind: str, method: str, args: Any, options: Any
    ) -> None:
        self._channel, self._kind, self._method = channel, kind, method
        self._args, self._options = args, options
        self._on: grpc.aio.Channel | None = None
        self._call: Any = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        current = self._channel.current()
        if current is not self._on:
            make = getattr(current, self._kind)
            self._call, self._on = make(self._method, *self._args, **self._options), current
        return self._call(*args, **kwargs)
