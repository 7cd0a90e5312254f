"""The original system's ids and profiles as Assay knows them after the cut-over (``assay
import original``), shared by the archive, which writes them, and the CLI, which reads the
original and verifies the import."""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from typing import Any

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


def canonical_json(document: Any) -> bytes:
    """The JSON the import compares profiles by: sorted keys, no spaces, UTF-8."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def profile_digest(document: Any) -> str:
    """SHA-256 (hex) of a profile's canonical JSON."""
    return hashlib.sha256(canonical_json(document)).hexdigest()
