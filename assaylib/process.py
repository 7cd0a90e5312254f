"""What every `python -m <service>` entry point does the same way: read the settings (a
one-line error and exit 2 when they are bad), set up logging and metrics, and wait for
SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

import uvloop

from assaylib.config import ConfigError, Settings, listen_addr
from assaylib.telemetry import configure_logging, start_metrics_server

EXIT_CONFIG = 2
T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run a process's main coroutine on uvloop (a faster event loop than asyncio's own,
    measured in bench/RESULTS.md)."""
    return uvloop.run(main)


def settings_or_exit(
    service: str, *, listen: str = "", allow_missing_secret: bool = False, metrics: bool = True
) -> Settings:
    """The settings from the environment, with logging (and, for servers, the metrics
    endpoint) set up; on a bad value print `<service>: <what is wrong>` and exit 2. `listen`
    names the Settings address field the service binds, checked here so a bad one is a
    configuration error too."""
    try:
        settings = Settings.from_env(allow_missing_secret=allow_missing_secret)
        if listen:
            listen_addr(getattr(settings, listen))
    except ConfigError as err:
        print(f"{service}: {err}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None
    configure_logging(service, settings.log_level)
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
