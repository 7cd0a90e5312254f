"""`python -m worker` pulls analysis jobs until SIGTERM, then finishes or hands back what it
holds within ASSAY_SHUTDOWN_GRACE and exits."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from assaylib.config import ConfigError, Settings
from assaylib.telemetry import configure_logging, start_metrics_server
from worker.app import WorkerApp

log = logging.getLogger("worker")


async def run(settings: Settings) -> int:
    """Work until SIGTERM or SIGINT, then stop gracefully; the exit status."""
    start_metrics_server(settings.metrics_addr)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    # Starting waits for NATS (reconnecting forever); a SIGTERM meanwhile just exits.
    starting = asyncio.create_task(WorkerApp.start(settings))
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait([starting, stopping], return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():
        starting.cancel()
        log.info("stopped before NATS was reachable")
        return 0
    stopping.cancel()
    try:
        app = starting.result()
    except Exception as err:  # e.g. the health port is taken: say so and let it restart
        log.error("could not start: %s", err or type(err).__name__)
        return 1
    await stop.wait()
    log.info("stopping: finishing held jobs for up to %.1fs", settings.shutdown_grace)
    await app.stop()
    log.info("stopped")
    return 0


def main() -> int:
    """Entry point."""
    try:
        settings = Settings.from_env()
    except ConfigError as err:
        print(f"worker: {err}", file=sys.stderr)
        return 2
    configure_logging("worker", settings.log_level)
    return asyncio.run(run(settings))


if __name__ == "__main__":
    sys.exit(main())
