"""`python -m worker` pulls analysis jobs until SIGTERM, then finishes or hands back what it
holds within ASSAY_SHUTDOWN_GRACE and exits."""

from __future__ import annotations

import asyncio
import logging
import sys

from assaylib import process
from assaylib.config import Settings
from assaylib.process import settings_or_exit, stop_on_signals
from worker.app import WorkerApp

log = logging.getLogger("worker")


async def run(settings: Settings) -> int:
    """Work until SIGTERM or SIGINT, then stop gracefully; the exit status."""
    stop = stop_on_signals()
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
    settings = settings_or_exit("worker", listen="worker_addr")
    return process.run(run(settings))


if __name__ == "__main__":
    sys.exit(main())
