"""Names about jobs that several packages share, defined once: the assessments (ARCHITECTURE
§4), the error codes a job can end with, and the readable name of a job status."""

from __future__ import annotations

from assay.common.v1 import job_pb2

TALENT_MAPPING = "AI-Driven Talent Mapping"
IQ_TEST = "AI-Based IQ Test"
CUSTOM = "Custom Assessment"
ASSESSMENT_NAMES = (TALENT_MAPPING, IQ_TEST, CUSTOM)
"""Every assessment name a submission may carry."""
DEFAULT_ASSESSMENT = TALENT_MAPPING
"""The assessment an empty name stands for."""

INDONESIAN = "id"
ENGLISH = "en"
LOCALES = (INDONESIAN, ENGLISH)
"""The languages a profile can be written in (BCP 47 tags; ``SubmitAssessmentRequest.locale``)."""
DEFAULT_LOCALE = INDONESIAN
"""The locale of a submission that names none, unless ASSAY_DEFAULT_LOCALE says otherwise: the
original system wrote every profile in Bahasa Indonesia."""

STUCK = "STUCK"
"""The sweep failed the job: its worker stopped heartbeating, it ran too long, or its queue
message was lost for good."""
ATTEMPTS_EXHAUSTED = "ATTEMPTS_EXHAUSTED"
"""Every attempt the job had ended without a result."""
ANALYSIS_TIMEOUT = "ANALYSIS_TIMEOUT"
"""One analysis ran longer than ASSAY_ANALYSIS_TIMEOUT."""
INTERNAL_ERROR = "INTERNAL_ERROR"
"""The worker met an error it has no better code for."""
ERASED = "ERASED"
"""The job was cancelled because its user's data was erased (EraseUserData)."""
CUT_OVER = "CUT_OVER"
"""The job was in flight in the original system at the cut-over and was imported failed (and
its original charge refunded) instead of queued (``assay import original --in-flight fail``)."""
ORIGINAL_FAILED = "ORIGINAL_FAILED"
"""The job failed in the original system (its message is the original's error_message)."""


def status_name(status: int) -> str:
    """``QUEUED`` for ``JOB_STATUS_QUEUED`` (and ``UNSPECIFIED`` for 0, the number for an
    unknown value)."""
    try:
        return job_pb2.JobStatus.Name(status).removeprefix("JOB_STATUS_")  # type: ignore[arg-type]
    except ValueError:
        return str(status)
