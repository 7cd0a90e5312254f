"""`python -m notifier` serves NotifierService.WatchJobs until SIGTERM."""

from __future__ import annotations

import logging
import sys

from assaylib import process
from assaylib.config import Settings, listen_addr
from assaylib.process import settings_or_exit, stop_on_signals
from notifier.app import NotifierApp

log = logging.getLogger("notifier")


async def serve(settings: Settings) -> None:
    """Serve until SIGTERM or SIGINT, then end open streams and stop within the grace."""
    app = await NotifierApp.start(settings, listen_addr(settings.notifier_addr))
    await stop_on_signals().wait()
    log.info("stopping: ending %d open watches", app.hub.active)
    await app.stop(settings.shutdown_grace)


def main() -> int:
    """Entry point."""
    settings = settings_or_exit("notifier", listen="notifier_addr")
    process.run(serve(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
