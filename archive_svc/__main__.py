"""`python -m archive_svc` serves the archive; `python -m archive_svc migrate` migrates;
`python -m archive_svc audit [--json]` checks the invariants over the database."""

from __future__ import annotations

import argparse
import logging
import sys

from archive_svc import audit
from archive_svc.app import ArchiveApp
from archive_svc.db import libpq_dsn
from archive_svc.migrate import upgrade
from assaylib import process
from assaylib.config import Settings, listen_addr
from assaylib.process import settings_or_exit
from assaylib.server import serve_until_signal

log = logging.getLogger("archive_svc")


async def serve(settings: Settings) -> None:
    """Serve until SIGTERM, then drain and stop."""
    app = await ArchiveApp.start(settings, listen_addr(settings.archive_addr))
    await serve_until_signal(
        app.server,
        app.health,
        grace=settings.shutdown_grace,
        on_stop=app.on_stop,
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(prog="python -m archive_svc", description=__doc__)
    parser.add_argument(
        "command", nargs="?", choices=["serve", "migrate", "audit"], default="serve"
    )
    parser.add_argument("--json", action="store_true", help="audit: one JSON object")
    args = parser.parse_args(argv)
    if args.command == "audit":
        settings = settings_or_exit("archive", allow_missing_secret=True, metrics=False)
        return audit.main(libpq_dsn(settings.database_url), args.json)
    migrate = args.command == "migrate"
    settings = settings_or_exit(
        "archive", listen="archive_addr", allow_missing_secret=migrate, metrics=not migrate
    )
    if migrate:
        upgrade(settings.database_url)
        log.info("database migrated to the latest revision")
        return 0
    process.run(serve(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
