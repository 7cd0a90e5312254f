"""The archive's rules that every RPC shares: its policy knobs, request checks, and how a
refusal or a batch item's error is said."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import asyncpg

from archive_svc.paging import PageTokens
from archive_svc.sealing import NO_KEYS, DataKeys
from assay.archive.v1 import archive_service_pb2 as pb
from assaylib import validation as v
from assaylib.errors import AssayError, FieldViolation, InvalidTransition, NotFound
from assaylib.jobs import DEFAULT_LOCALE
from assaylib.tiers import DEFAULT_TIERS, Tiers


@dataclass(frozen=True)
class Policy:
    """The archive's knobs, from Settings."""

    token_cost: int = 1
    lease_timeout: float = 30.0
    max_attempts: int = 3
    default_locale: str = DEFAULT_LOCALE
    """The locale a submission without one is written in (ASSAY_DEFAULT_LOCALE)."""
    data_keys: DataKeys = field(default=NO_KEYS, compare=False)
    """What seals users' data at rest (ASSAY_DATA_KEY_FILE; none by default)."""
    tiers: Tiers = field(default_factory=lambda: Tiers.parse(DEFAULT_TIERS), compare=False)
    """The tiers and their priority lanes (ASSAY_TIERS)."""


def parse_uuid(value: str, field: str) -> uuid.UUID:
    """value as a UUID, or INVALID_ARGUMENT naming field."""
    v.require_valid(v.uuid_violations(value, field))
    return uuid.UUID(value)


def owner_violations(owner: str) -> list[FieldViolation]:
    """Violations of an optional owner filter (``user_id``; empty means any owner)."""
    return v.id_violations(owner, "user_id", required=False)


def check_owner(row: asyncpg.Record | None, owner: str, what: str, ident: str) -> asyncpg.Record:
    """The row if it exists and belongs to owner (any owner when empty); else NOT_FOUND."""
    if row is None or (owner and row["user_id"] != owner):
        raise NotFound(f"{what} {ident} not found")
    return row


def refused(operation: str, job: asyncpg.Record, owner: str = "") -> AssayError:
    """The error for a refused operation: NOT_FOUND when the job is not the owner's (its
    existence is not revealed), else INVALID_TRANSITION naming the job's state."""
    if owner and job["user_id"] != owner:
        return NotFound(f"job {job['job_id']} not found")
    status = str(job["status"])
    return InvalidTransition(
        f"job {job['job_id']} is {status} (attempt {job['attempt']}); {operation} is not allowed",
        metadata={"status": status, "attempt": str(job["attempt"])},
    )


MAX_BATCH = 1000
"""Items one batch RPC may carry."""


def fill_item_error(item: pb.ItemError, error: AssayError) -> None:
    """A batch item's error, as the single RPC would have ended."""
    item.code = error.code.value[0]
    item.message = error.message
    item.reason = error.reason
    item.metadata.update(error.metadata)


class ArchivePart:
    """One concept of the archive's domain (submissions, jobs, results, tokens) over the
    shared pool, policy and page tokens."""

    def __init__(self, pool: asyncpg.Pool, policy: Policy, pages: PageTokens) -> None:
        self.pool = pool
        self.policy = policy
        self.pages = pages
