"""Client channels to other Assay services: TLS when configured, bearer token, keepalive."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import grpc
import grpc.aio

from assaylib import tracing
from assaylib.auth import TokenSource, authorized
from assaylib.config import Settings
from assaylib.tls import ReloadingChannel

__all__ = [
    "CHANNEL_OPTIONS",
    "BearerChannel",
    "channel_target",
    "client_credentials",
    "open_channel",
]

CHANNEL_OPTIONS: list[tuple[str, int | str]] = [
    # Detect a dead peer (e.g. a killed pod) within ~40 s even on an idle long stream.
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    # Reconnect quickly after a server restart.
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 5_000),
    # Each channel keeps its own connections: with gRPC's process-wide pool, a new channel to
    # an address whose earlier server died inherits that failure and its backoff.
    ("grpc.use_local_subchannel_pool", 1),
    # Spread calls over every address the name resolves to (archive replicas behind a
    # headless Service, or a comma-separated list), not just the first.
    ("grpc.lb_policy_name", "round_robin"),
    # Submissions are at most 1 MiB; leave headroom for the envelope.
    ("grpc.max_send_message_length", 4 * 1024 * 1024),
    ("grpc.max_receive_message_length", 4 * 1024 * 1024),
]


def client_credentials(settings: Settings) -> grpc.ChannelCredentials | None:
    """TLS credentials from ``tls_ca`` (plus ``tls_cert``/``tls_key`` for mTLS), else None."""
    if not settings.tls_ca:
        return None
    root = Path(settings.tls_ca).read_bytes()
    if settings.tls_cert and settings.tls_key:
        return grpc.ssl_channel_credentials(
            root_certificates=root,
            private_key=Path(settings.tls_key).read_bytes(),
            certificate_chain=Path(settings.tls_cert).read_bytes(),
        )
    return grpc.ssl_channel_credentials(root_certificates=root)


def channel_target(addr: str) -> str:
    """The gRPC target for an address: ``host:port`` (resolved by DNS: every address of a
    headless Service), or ``ip:port,ip:port`` for a fixed list of replicas."""
    return f"ipv4:{addr}" if "," in addr else addr


def open_channel(
    addr: str, settings: Settings, token: str | Callable[[], str] | None = None
) -> grpc.aio.Channel:
    """A channel to ``addr``: secure when ``settings.tls_ca`` is set — and then opened again
    when the CA bundle or this process's certificate is renewed (``tls.ReloadingChannel``) —
    sending ``token``."""
    interceptors = tracing.client_interceptors()
    target = channel_target(addr)
    channel: grpc.aio.Channel
    if not settings.tls_ca:
        channel = grpc.aio.insecure_channel(
            target, options=CHANNEL_OPTIONS, interceptors=interceptors
        )
    else:

        def secure() -> grpc.aio.Channel:
            credentials = client_credentials(settings)
            assert credentials is not None
            return grpc.aio.secure_channel(
                target, credentials, options=CHANNEL_OPTIONS, interceptors=interceptors
            )

        channel = ReloadingChannel(secure, [settings.tls_ca, settings.tls_cert, settings.tls_key])
    return channel if token is None else BearerChannel(channel, token)


class _Authorized:
    """A multicallable of ``BearerChannel``: the call, with the token in its metadata."""

    __slots__ = ("_call", "_token")

    def __init__(self, call: Any, token: TokenSource) -> None:
        self._call = call
        self._token = token

    def __call__(
        self,
        request: Any,
        *,
        timeout: float | None = None,
        metadata: Any = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> Any:
        return self._call(
            request,
            timeout=timeout,
            metadata=authorized(metadata, self._token),
            credentials=credentials,
            wait_for_ready=wait_for_ready,
            compression=compression,
        )


class BearerChannel(grpc.aio.Channel):
    """``channel`` with ``authorization: Bearer <token>`` on every call, as call metadata: a
    client interceptor (``bearer_token_interceptors``) does the same, but grpc.aio runs each
    intercepted call through a task and a call object of its own, which cost a service as
    much CPU as the interceptor's work many times over."""

    def __init__(self, channel: grpc.aio.Channel, token: TokenSource) -> None:
        self._channel = channel
        self._token = token

    def unary_unary(self, method: str, *args: Any, **options: Any) -> Any:
        """A unary-unary multicallable that sends the token."""
        return _Authorized(self._channel.unary_unary(method, *args, **options), self._token)

    def unary_stream(self, method: str, *args: Any, **options: Any) -> Any:
        """A unary-stream multicallable that sends the token."""
        return _Authorized(self._channel.unary_stream(method, *args, **options), self._token)

    def stream_unary(self, method: str, *args: Any, **options: Any) -> Any:
        """A stream-unary multicallable that sends the token."""
        return _Authorized(self._channel.stream_unary(method, *args, **options), self._token)

    def stream_stream(self, method: str, *args: Any, **options: Any) -> Any:
        """A stream-stream multicallable that sends the token."""
        return _Authorized(self._channel.stream_stream(method, *args, **options), self._token)

    async def close(self, grace: float | None = None) -> None:
        """Close the underlying channel."""
        await self._channel.close(grace)

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        """The underlying channel's connectivity."""
        return self._channel.get_state(try_to_connect)

    async def wait_for_state_change(self, last_observed_state: grpc.ChannelConnectivity) -> None:
        """Wait until the underlying channel's connectivity changes."""
        await self._channel.wait_for_state_change(last_observed_state)

    async def channel_ready(self) -> None:
        """Wait until the underlying channel is READY."""
        await self._channel.channel_ready()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        await self.close(None)
