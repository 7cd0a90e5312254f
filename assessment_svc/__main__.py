"""`python -m assessment_svc` serves the AssessmentService on ``ASSAY_ASSESSMENT_ADDR``."""

from __future__ import annotations

import argparse
import asyncio
import sys

from assaylib.config import ConfigError, Settings, listen_addr
from assaylib.server import serve_until_signal
from assaylib.telemetry import configure_logging, start_metrics_server
from assessment_svc.app import AssessmentApp


async def serve(settings: Settings) -> None:
    """Serve until SIGTERM or SIGINT, then drain within the grace period and stop."""
    start_metrics_server(settings.metrics_addr)
    app = await AssessmentApp.start(settings, listen_addr(settings.assessment_addr))
    await serve_until_signal(
        app.server, app.health, grace=settings.shutdown_grace, on_stop=[app.archive.close]
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point: read the environment, serve, exit 2 on bad configuration."""
    parser = argparse.ArgumentParser(prog="python -m assessment_svc", description=__doc__)
    parser.parse_args(argv)
    try:
        settings = Settings.from_env()
        listen_addr(settings.assessment_addr)
    except ConfigError as err:
        print(f"assessment: {err}", file=sys.stderr)
        return 2
    configure_logging("assessment", settings.log_level)
    asyncio.run(serve(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
