"""Client channels to other Assay services: TLS when configured, bearer token, keepalive."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import grpc
import grpc.aio

from assaylib import tracing
from assaylib.auth import bearer_token_interceptors
from assaylib.config import Settings

__all__ = ["CHANNEL_OPTIONS", "channel_target", "client_credentials", "open_channel"]

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
    """A channel to ``addr``: secure when ``settings.tls_ca`` is set, sending ``token``."""
    interceptors = [
        *tracing.client_interceptors(),
        *(bearer_token_interceptors(token) if token is not None else []),
    ]
    credentials = client_credentials(settings)
    if credentials is None:
        return grpc.aio.insecure_channel(
            channel_target(addr), options=CHANNEL_OPTIONS, interceptors=interceptors
        )
    return grpc.aio.secure_channel(
        channel_target(addr), credentials, options=CHANNEL_OPTIONS, interceptors=interceptors
    )
