"""`python -m notifier` serves NotifierService.WatchJobs until SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from assaylib.config import ConfigError, Settings, listen_addr
from assaylib.telemetry import configure_logging, start_metrics_server
from notifier.app import NotifierApp

log = logging.getLogger("notifier")


async def serve(settings: Settings) -> None:
    """Serve until SIGTERM or SIGINT, then end open streams and stop within the grace."""
    start_metrics_server(settings.metrics_addr)
    app = await NotifierApp.start(settings, listen_addr(settings.notifier_addr))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    log.info("stopping: ending %d open watches", app.hub.active)
    await app.stop(settings.shutdown_grace)


def main() -> int:
    """Entry point."""
    try:
        settings = Settings.from_env()
        listen_addr(settings.notifier_addr)
    except ConfigError as err:
        print(f"notifier: {err}", file=sys.stderr)
        return 2
    configure_logging("notifier", settings.log_level)
    asyncio.run(serve(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
