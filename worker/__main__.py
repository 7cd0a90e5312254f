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


async def run(settings: Settings) -> None:
    """Work until SIGTERM or SIGINT, then stop gracefully."""
    start_metrics_server(settings.metrics_addr)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    app = await WorkerApp.start(settings)
    await stop.wait()
    log.info("stopping: finishing held jobs for up to %.1fs", settings.shutdown_grace)
    await app.stop()
    log.info("stopped")


def main() -> int:
    """Entry point."""
    try:
        settings = Settings.from_env()
    except ConfigError as err:
        print(f"worker: {err}", file=sys.stderr)
        return 2
    configure_logging("worker", settings.log_level)
    asyncio.run(run(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
