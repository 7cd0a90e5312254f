"""What every `python -m <service>` entry point does the same way: read the settings (a
one-line error and exit 2 when they are bad), set up logging and metrics, start the service
on uvloop, and on SIGTERM or SIGINT stop it within the shutdown grace — ``run_service``."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any, Protocol, TypeVar

import uvloop

from assaylib import tracing
from assaylib.config import ConfigError, Settings, listen_addr
from assaylib.logs import configure_logging
from assaylib.telemetry import sample_event_loop_lag, start_metrics_server

EXIT_CONFIG = 2
T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run a process's main coroutine on uvloop (a faster event loop than asyncio's own,
    measured in bench/RESULTS.md)."""
    return uvloop.run(main)


def settings_or_exit(
    service: str, *, listen: str = "", allow_missing_keys: bool = False, metrics: bool = True
) -> Settings:
    """The settings from the environment, with logging, tracing (when OTEL_TRACES_EXPORTER
    asks for it) and, for servers, the metrics endpoint set up; on a bad value print
    `<service>: <what is wrong>` and exit 2. `listen` names the Settings address field the
    service binds, checked here so a bad one is a configuration error too."""
    try:
        settings = Settings.from_env(allow_missing_keys=allow_missing_keys)
        if listen:
            listen_addr(getattr(settings, listen))
    except ConfigError as err:
        print(f"{service}: {err}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None
    configure_logging(service, settings.log_level, settings.log_format)
    tracing.configure_tracing(service, settings.trace_sample_ratio)
    if metrics:
        start_metrics_server(settings.metrics_addr)
    return settings


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT (call inside the running loop)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    return stop


class Service(Protocol):
    """A started service: it stops within a grace period."""

    async def stop(self, grace: float) -> None:
        """Stop serving; in-flight work gets ``grace`` seconds."""


Start = Callable[[Settings], Coroutine[Any, Any, Service]]

log = logging.getLogger(__name__)


async def serve_until_stopped(
    name: str, settings: Settings, start: Start, stop: asyncio.Event | None = None
) -> int:
    """Start a service and serve until ``stop`` (default: SIGTERM or SIGINT), then stop it
    within the shutdown grace; the exit status. A signal while it is still starting (say,
    waiting for NATS) exits at once, 0; a start that fails is logged in one line, 1. The
    event loop's lag is sampled meanwhile (``assay_event_loop_lag_seconds``)."""
    stop = stop or stop_on_signals()
    lag = asyncio.create_task(sample_event_loop_lag(), name=f"{name}-loop-lag")
    try:
        return await _serve(name, settings, start, stop)
    finally:
        lag.cancel()


async def _serve(name: str, settings: Settings, start: Start, stop: asyncio.Event) -> int:
    starting = asyncio.create_task(start(settings), name=f"{name}-start")
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait([starting, stopping], return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():
        starting.cancel()
        await asyncio.gather(starting, return_exceptions=True)
        log.info("%s: stopped before it had started", name)
        return 0
    stopping.cancel()
    try:
        service = starting.result()
    except Exception as err:  # e.g. the port is taken: say so and let it be restarted
        log.error("%s: could not start: %s", name, err or type(err).__name__)
        return 1
    await stop.wait()
    log.info("%s: stopping, in-flight work has %.1fs", name, settings.shutdown_grace)
    await service.stop(settings.shutdown_grace)
    log.info("%s: stopped", name)
    return 0


def run_service(name: str, start: Start, *, listen: str) -> int:
    """The whole of a service's ``main``: settings (exit 2 when bad), logging and metrics,
    then ``serve_until_stopped`` on uvloop; the exit status."""
    settings = settings_or_exit(name, listen=listen)
    try:
        return run(serve_until_stopped(name, settings, start))
    finally:
        tracing.uninstall()  # export the spans still buffered
