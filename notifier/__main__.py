"""`python -m notifier` serves NotifierService.WatchJobs until SIGTERM (open streams end with
a resumable status)."""

from __future__ import annotations

import argparse
import sys

from assaylib.config import Settings, listen_addr
from assaylib.process import run_service
from notifier.app import NotifierApp


async def start(settings: Settings) -> NotifierApp:
    """The notifier, listening on its address."""
    return await NotifierApp.start(settings, listen_addr(settings.notifier_addr))


def main(argv: list[str] | None = None) -> int:
    """Entry point; ``--help`` describes the process without reading its configuration."""
    argparse.ArgumentParser(prog="python -m notifier", description=__doc__).parse_args(argv)
    return run_service("notifier", start, listen="notifier_addr")


if __name__ == "__main__":
    sys.exit(main())
