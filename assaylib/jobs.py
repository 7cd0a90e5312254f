"""Names about jobs that several packages share, defined once: the assessments (ARCHITECTURE
§4), the error codes a job can end with, and the readable name of a job status."""

from __future__ import annotations

import re
import uuid

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

ORIGINAL_JOB_NAMESPACE = uuid.UUID("6d1f3b0e-5a8c-5f4e-9b7a-2c0d4e8f1a63")
"""The namespace of the Assay ids of original jobs whose ids are not UUIDs (``uuid5``)."""
_CANONICAL_UUID = re.compile(r"[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}")


def original_job_uuid(original_job_id: str) -> uuid.UUID:
    """The Assay job id of an original system's job: its id when that is a UUID in the
    canonical 8-4-4-4-12 form (any case), else ``uuid5(ORIGINAL_JOB_NAMESPACE, id)`` — so a
    caller holding an original id finds the imported job without asking anyone."""
    if _CANONICAL_UUID.fullmatch(original_job_id):
        return uuid.UUID(original_job_id)
    return uuid.uuid5(ORIGINAL_JOB_NAMESPACE, original_job_id)


def status_name(status: int) -> str:
    """``QUEUED`` for ``JOB_STATUS_QUEUED`` (and ``UNSPECIFIED`` for 0, the number for an
    unknown value)."""
    try:
        return job_pb2.JobStatus.Name(status).removeprefix("JOB_STATUS_")  # type: ignore[arg-type]
    except ValueError:
        return str(status)
