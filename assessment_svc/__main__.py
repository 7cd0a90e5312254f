"""`python -m assessment_svc` serves the AssessmentService on ``ASSAY_ASSESSMENT_ADDR``."""

from __future__ import annotations

import argparse
import sys

from assaylib.config import Settings, listen_addr
from assaylib.process import run_service
from assessment_svc.app import AssessmentApp


async def start(settings: Settings) -> AssessmentApp:
    """The service, listening on its address."""
    return await AssessmentApp.start(settings, listen_addr(settings.assessment_addr))


def main(argv: list[str] | None = None) -> int:
    """Entry point: serve until SIGTERM; exit 2 on bad configuration."""
    argparse.ArgumentParser(prog="python -m assessment_svc", description=__doc__).parse_args(argv)
    return run_service("assessment", start, listen="assessment_addr")


if __name__ == "__main__":
    sys.exit(main())
