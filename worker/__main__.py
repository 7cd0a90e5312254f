"""`python -m worker` pulls analysis jobs until SIGTERM, then finishes or hands back what it
holds within ASSAY_SHUTDOWN_GRACE and exits. While NATS is unreachable it waits (a SIGTERM
meanwhile exits 0)."""

from __future__ import annotations

import argparse
import sys

from assaylib.process import run_service
from worker.app import WorkerApp


def main(argv: list[str] | None = None) -> int:
    """Entry point; ``--help`` describes the process without reading its configuration."""
    argparse.ArgumentParser(prog="python -m worker", description=__doc__).parse_args(argv)
    return run_service("worker", WorkerApp.start, listen="worker_addr")


if __name__ == "__main__":
    sys.exit(main())
