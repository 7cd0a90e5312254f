"""assay-client: submit assessments to Assay, read jobs and results, and watch every status
change across disconnects.

    async with AssayClient("assay-assessment:50051", notifier_addr="assay-notifier:50053",
                           token=Path("/var/run/secrets/assay/token")) as assay:
        reply = await assay.submit(data)
        job, result = await assay.wait(reply.job.job_id)
"""

from assay_client.client import MAX_BATCH, TERMINAL, AssayClient, channel_ready
from assay_client.errors import (
    AlreadyExists,
    AssayError,
    DeadlineExceeded,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    ResumeTokenExpired,
    Unauthenticated,
    Unavailable,
)
from assay_client.listing import JobList
from assay_client.sync import SyncAssayClient
from assay_client.tls import tls_credentials
from assay_client.tokens import FileToken, TokenSource
from assay_client.watch import CursorStore, FileCursorStore, WatchItem

__all__ = [
    "MAX_BATCH",
    "TERMINAL",
    "AlreadyExists",
    "AssayClient",
    "AssayError",
    "CursorStore",
    "DeadlineExceeded",
    "FailedPrecondition",
    "FieldViolation",
    "FileCursorStore",
    "FileToken",
    "InvalidArgument",
    "JobList",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "ResumeTokenExpired",
    "SyncAssayClient",
    "TokenSource",
    "Unauthenticated",
    "Unavailable",
    "WatchItem",
    "channel_ready",
    "tls_credentials",
]
