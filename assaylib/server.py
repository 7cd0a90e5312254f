"""Server bootstrap shared by the four services: interceptors, health, reflection, TLS, shutdown."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from weakref import WeakKeyDictionary

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from assaylib import tls, tracing
from assaylib.access import ACCESS, AccessTable
from assaylib.auth import AuthInterceptor, verifier_of
from assaylib.config import Settings, listen_addr
from assaylib.pipeline import ServerPipeline

__all__ = [
    "HEALTH_SERVICE",
    "SERVER_OPTIONS",
    "HealthServicer",
    "create_server",
    "server_credentials",
    "shutdown",
]

HEALTH_SERVICE = "grpc.health.v1.Health"
SERVING = health_pb2.HealthCheckResponse.SERVING

SERVER_OPTIONS: list[tuple[str, int]] = [
    # Accept the keepalive pings that channels.open_channel sends on idle connections.
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.max_receive_message_length", 4 * 1024 * 1024),
    ("grpc.max_send_message_length", 4 * 1024 * 1024),
]

log = logging.getLogger(__name__)

_HEALTH_ONLY: WeakKeyDictionary[grpc.aio.Server, grpc.aio.Server] = WeakKeyDictionary()
"""A server's plaintext health-only companion (``health_addr``), stopped with it."""


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS credentials from ``tls_cert``/``tls_key``, re-read when they are renewed
    (assaylib.tls); client certificates required if ``tls_ca``."""
    if not (settings.tls_cert and settings.tls_key):
        return None
    return tls.server_credentials(settings.tls_cert, settings.tls_key, settings.tls_ca)


async def create_server(
    bind: str,
    *,
    settings: Settings,
    register: Sequence[Callable[[grpc.aio.Server], None]],
    service_names: Sequence[str],
    access: AccessTable = ACCESS,
    transient_errors: Sequence[type[BaseException]] = (),
) -> tuple[grpc.aio.Server, int, HealthServicer]:
    """Start a server on ``bind`` with the servicers ``register`` adds; return it, its port and
    its health servicer (a ``grpc_health.v1.health.aio.HealthServicer``).
    ``transient_errors`` are the exceptions that mean a backing service is down (UNAVAILABLE);
    ``access`` says which identity may call which method (ARCHITECTURE §6).

    Interceptors, outermost first: tracing (when on), metrics, error mapping, authentication
    (health and reflection are exempt), then the decode guard (a request that does not decode
    is INVALID_ARGUMENT, after authentication). Every name in ``service_names`` and "" is set
    SERVING. Server reflection is served when ``settings.reflection`` (it is unauthenticated).
    """
    verifier = verifier_of(settings)
    await verifier.refresh()  # read once now, so a missing JWKS is said at start-up
    if not verifier.kids:
        log.error("the JWKS holds no usable key: every call will be UNAUTHENTICATED")
    server = grpc.aio.server(
        interceptors=[
            *tracing.server_interceptors(),
            # metrics, error mapping, authentication, decode guard: one layer (pipeline.py)
            ServerPipeline(AuthInterceptor(verifier, access), transient_errors),
        ],
        options=SERVER_OPTIONS,
    )
    for add_servicer in register:
        add_servicer(server)
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    for name in ("", *service_names):
        await health.set(name, SERVING)
    if settings.reflection:
        reflection.enable_server_reflection(
            [*service_names, HEALTH_SERVICE, reflection.SERVICE_NAME], server
        )
    credentials = server_credentials(settings)
    if credentials is None:
        port = server.add_insecure_port(bind)
    else:
        port = server.add_secure_port(bind, credentials)
    if port == 0:
        raise OSError(f"could not bind {bind}")
    await server.start()
    if settings.health_addr:
        _HEALTH_ONLY[server] = await _health_only(settings.health_addr, health)
    log.info("serving %s on port %d", ", ".join(service_names), port)
    return server, port, health


async def _health_only(addr: str, health: HealthServicer) -> grpc.aio.Server:
    """A plaintext server of grpc.health.v1 only, sharing ``health``'s statuses: the
    kubelet's gRPC probes speak no TLS, and health carries no token and no data."""
    server = grpc.aio.server(options=SERVER_OPTIONS)
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    if server.add_insecure_port(listen_addr(addr)) == 0:
        raise OSError(f"could not bind {addr} (ASSAY_HEALTH_ADDR)")
    await server.start()
    return server


async def shutdown(
    server: grpc.aio.Server,
    health: HealthServicer,
    grace: float,
    on_stop: Sequence[Callable[[], Awaitable[None]]] = (),
) -> None:
    """Health → NOT_SERVING, stop accepting and let in-flight calls finish within ``grace``
    seconds, then run ``on_stop`` callbacks in order (each failure is logged, not raised)."""
    await health.enter_graceful_shutdown()
    await server.stop(grace)
    companion = _HEALTH_ONLY.pop(server, None)
    if companion is not None:
        await companion.stop(0)
    for callback in on_stop:
        try:
            await callback()
        except Exception:
            log.exception("shutdown callback %r failed", callback)
