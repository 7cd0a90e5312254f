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
from assaylib.config import ConfigError, Settings, listen_addr
from assaylib.process import run_service, settings_or_exit

log = logging.getLogger("archive_svc")


async def start(settings: Settings) -> ArchiveApp:
    """The archive (and its relay), listening on its address; exit 2 on a bad key file."""
    try:
        return await ArchiveApp.start(settings, listen_addr(settings.archive_addr))
    except ConfigError as err:
        print(f"archive: {err}", file=sys.stderr)
        raise SystemExit(2) from None


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(prog="python -m archive_svc", description=__doc__)
    parser.add_argument(
        "command", nargs="?", choices=["serve", "migrate", "audit"], default="serve"
    )
    parser.add_argument("--json", action="store_true", help="audit: one JSON object")
    args = parser.parse_args(argv)
    if args.command == "audit":
        settings = settings_or_exit("archive", allow_missing_keys=True, metrics=False)
        return audit.main(libpq_dsn(settings.database_url), args.json)
    if args.command == "migrate":
        settings = settings_or_exit("archive", allow_missing_keys=True, metrics=False)
        upgrade(settings.database_url)
        log.info("database migrated to the latest revision")
        return 0
    return run_service("archive", start, listen="archive_addr")


if __name__ == "__main__":
    sys.exit(main())
