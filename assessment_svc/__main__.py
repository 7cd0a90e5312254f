"""`python -m assessment_svc` serves the AssessmentService on ``ASSAY_ASSESSMENT_ADDR``."""

from __future__ import annotations

import argparse
import sys

from assaylib import process
from assaylib.config import Settings, listen_addr
from assaylib.process import settings_or_exit
from assaylib.server import serve_until_signal
from assessment_svc.app import AssessmentApp


async def serve(settings: Settings) -> None:
    """Serve until SIGTERM or SIGINT, then drain within the grace period and stop."""
    app = await AssessmentApp.start(settings, listen_addr(settings.assessment_addr))
    await serve_until_signal(
        app.server, app.health, grace=settings.shutdown_grace, on_stop=[app.archive.close]
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point: read the environment, serve, exit 2 on bad configuration."""
    parser = argparse.ArgumentParser(prog="python -m assessment_svc", description=__doc__)
    parser.parse_args(argv)
    settings = settings_or_exit("assessment", listen="assessment_addr")
    process.run(serve(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
