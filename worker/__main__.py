"""`python -m worker` pulls analysis jobs until SIGTERM, then finishes or hands back what it
holds within ASSAY_SHUTDOWN_GRACE and exits. While NATS is unreachable it waits (a SIGTERM
meanwhile exits 0)."""

from __future__ import annotations

import sys

from assaylib.process import run_service
from worker.app import WorkerApp


def main() -> int:
    """Entry point."""
    return run_service("worker", WorkerApp.start, listen="worker_addr")


if __name__ == "__main__":
    sys.exit(main())
