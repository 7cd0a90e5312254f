"""The one sweep request every caller sends (the sweep command, its loop and `assay sweep`)."""

from __future__ import annotations

from assay.archive.v1 import archive_service_pb2 as pb
from assaylib.config import Settings

BATCH = 500
"""Jobs failed or re-published per transaction."""
GUARD_MIN_COUNT = 5
"""The mass-failure guard needs this many stale jobs: one dead worker is still swept."""


def sweep_request(settings: Settings, *, dry_run: bool, force: bool) -> pb.SweepStuckJobsRequest:
    """The archive request for one sweep with the configured thresholds."""
    request = pb.SweepStuckJobsRequest(
        limit=BATCH,
        dry_run=dry_run,
        max_fraction=settings.sweep_max_fraction,
        force=force,
        guard_min_count=GUARD_MIN_COUNT,
    )
    request.stuck_after.FromNanoseconds(int(settings.stuck_after * 1e9))
    request.max_processing.FromNanoseconds(int(settings.max_processing * 1e9))
    request.max_queued.FromNanoseconds(int(settings.max_queued * 1e9))
    request.result_retention.FromNanoseconds(int(settings.result_retention * 1e9))
    request.access_record_retention.FromNanoseconds(int(settings.access_record_retention * 1e9))
    return request
