"""The archive's schema as SQLAlchemy models.

The migrations in archive_svc/migrations build the same schema; a test diffs the two.
Queries live in archive_svc/store/, not here.
"""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Enum,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.dialects.postgresql.base import ischema_names
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import UserDefinedType

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class JobStatus(enum.StrEnum):
    """A job's status; mirrors the PostgreSQL enum `job_status`."""

    QUEUED = "QUEUED"
    PROCESSING = "PROCESSING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


class LedgerKind(enum.StrEnum):
    """Why a ledger entry exists; mirrors the PostgreSQL enum `ledger_kind`."""

    GRANT = "GRANT"
    DEBIT = "DEBIT"
    REFUND = "REFUND"


class Xid8(UserDefinedType[int]):
    """PostgreSQL's 64-bit transaction id (``xid8``)."""

    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        return "xid8"


class PgSnapshot(UserDefinedType[str]):
    """PostgreSQL's ``pg_snapshot``: which transactions had committed when it was taken."""

    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        return "pg_snapshot"


# Reflection (the schema test's diff) knows them by name.
ischema_names.update(xid8=Xid8, pg_snapshot=PgSnapshot)


class Base(DeclarativeBase):
    """Declarative base with the project's constraint naming convention."""

    metadata = MetaData(naming_convention=NAMING)


NOW = text("now()")


class TokenAccount(Base):
    """A user's token balance; always equal to the sum of their ledger entries."""

    __tablename__ = "token_accounts"
    __table_args__ = (CheckConstraint("balance >= 0", name="balance_not_negative"),)

    user_id: Mapped[str] = mapped_column(Text, primary_key=True)
    balance: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default=text("0"))
    updated_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=NOW
    )


class LedgerEntry(Base):
    """One signed change to a balance. A charge has one debit and at most one refund."""

    __tablename__ = "ledger_entries"
    __table_args__ = (
        UniqueConstraint("job_id", "charge_no", "kind"),
        CheckConstraint(
            "(kind = 'GRANT' AND amount <> 0 AND job_id IS NULL)"  # < 0: 0014's corrections
            " OR (kind = 'DEBIT' AND amount < 0 AND job_id IS NOT NULL)"
            " OR (kind = 'REFUND' AND amount > 0 AND job_id IS NOT NULL)",
            name="amount_matches_kind",
        ),
        Index(None, "user_id", "entry_id"),
    )

    entry_id: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    user_id: Mapped[str] = mapped_column(Text, ForeignKey("token_accounts.user_id"), nullable=False)
    kind: Mapped[LedgerKind] = mapped_column(
        Enum(LedgerKind, name="ledger_kind", native_enum=True), nullable=False
    )
    amount: Mapped[int] = mapped_column(BigInteger, nullable=False)
    job_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    charge_no: Mapped[int | None] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(Text, nullable=False, server_default=text("''"))
    created_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=NOW
    )


class Job(Base):
    """An analysis job. Its status changes only by compare-and-set updates."""

    __tablename__ = "jobs"
    __table_args__ = (
        Index(None, "user_id", "created_at", "job_id"),
        Index(None, "created_at", "job_id"),
        # not on heartbeat_at: a heartbeat changes no indexed column, so it is a HOT update
        # (the table is fillfactor 90, migration 0011)
        Index("ix_jobs_processing", "started_at", postgresql_where=text("status = 'PROCESSING'")),
        Index(
            "ix_jobs_inflight_user",
            "user_id",
            postgresql_where=text("status IN ('QUEUED', 'PROCESSING')"),
        ),
        Index("ix_jobs_queued_updated", "updated_at", postgresql_where=text("status = 'QUEUED'")),
        Index("ix_jobs_finished", "finished_at", postgresql_where=text("finished_at IS NOT NULL")),
    )

    job_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    user_id: Mapped[str] = mapped_column(Text, nullable=False)
    result_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    assessment_name: Mapped[str] = mapped_column(Text, nullable=False)
    status: Mapped[JobStatus] = mapped_column(
        Enum(JobStatus, name="job_status", native_enum=True), nullable=False
    )
    attempt: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    worker_id: Mapped[str | None] = mapped_column(Text)
    version: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default=text("1"))
    cancel_requested: Mapped[bool] = mapped_column(
        Boolean, nullable=False, server_default=text("false")
    )
    error_code: Mapped[str | None] = mapped_column(Text)
    error_message: Mapped[str | None] = mapped_column(Text)
    charge_count: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("1"))
    token_cost: Mapped[int] = mapped_column(BigInteger, nullable=False)
    request_id: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=NOW
    )
    updated_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=NOW
    )
    started_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    processing_time_ms: Mapped[int | None] = mapped_column(BigInteger)
    requeues: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    """Times the sweep re-published this QUEUED job's lost queue message (reset by retry)."""
    trace_context: Mapped[str | None] = mapped_column(Text)
    """The W3C traceparent of its submission: every message about the job joins that trace."""
    locale: Mapped[str | None] = mapped_column(Text)
    """The language its profile is written in ("id" or "en"); NULL for jobs older than
    locales, whose queue messages carry none (the worker writes in its default)."""
    priority: Mapped[int] = mapped_column(SmallInteger, nullable=False, server_default=text("0"))
    """Its priority lane, from its user's tier at submit (``assaylib.tiers``): 0 is the
    default tier's lane, as for every job older than tiers."""
    queue_held_by: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    """The outbox row whose queue message the relay held back while the job's user had
    ``ASSAY_QUEUED_PER_USER`` jobs queued in the stream (migration 0017); NULL when not held."""


class Result(Base):
    """A result row: the submitted data and, once analysed, the persona profile."""

    __tablename__ = "results"
    __table_args__ = (
        Index(None, "user_id", "created_at", "result_id"),
        Index(None, "job_id"),
        Index("ix_results_retained", "created_at", postgresql_where=text("erased_at IS NULL")),
    )
    # The table is fillfactor 60 (migration 0010; SQLAlchemy cannot declare it): room in each
    # page for the row's one update, COMPLETE's profile, so that stays in the page (HOT).

    result_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    job_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    user_id: Mapped[str] = mapped_column(Text, nullable=False)
    assessment_name: Mapped[str] = mapped_column(Text, nullable=False)
    test_data: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    """The submission's AssessmentData: protobuf, maybe sealed; or the JSON of a row from
    before 0012 (``archive_svc.inputs``)."""
    raw_responses: Mapped[bytes] = mapped_column(
        LargeBinary, nullable=False, server_default=text("''::bytea")
    )
    """Its RawResponses: protobuf or a zstd frame of it, maybe sealed; or JSON from before
    0012 (``archive_svc.inputs``)."""
    test_result: Mapped[bytes | None] = mapped_column(LargeBinary)
    """The persona profile: protobuf compressed by zstd with a dictionary, maybe sealed; or
    the JSON of a row from before 0010 (``archive_svc.profiles``)."""
    created_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=NOW
    )
    updated_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=NOW
    )
    erased_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    """When its content (test_data, raw_responses, test_result) was erased; NULL while kept."""


class OutboxMessage(Base):
    """A message to publish to JetStream, written in the transaction that caused it: a queue
    message (``kind`` 'job': ``payload``, or built from the result row when empty) or an event
    (``kind`` 'event': the typed columns, encoded as a JobEvent by the relay). Written once:
    whether it is published is ``outbox_published(txid, seq)``, by the relay's cursor."""

    __tablename__ = "outbox"
    __table_args__ = (Index(None, "job_id"), Index(None, "txid"))

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, Identity(always=False), nullable=False)
    subject: Mapped[str | None] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(Text, nullable=False)
    job_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    payload: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=NOW
    )
    txid: Mapped[int] = mapped_column(
        Xid8, nullable=False, server_default=text("pg_current_xact_id()")
    )
    """The transaction that wrote the row."""
    event_type: Mapped[str | None] = mapped_column(Text)
    user_id: Mapped[str | None] = mapped_column(Text)
    result_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    status: Mapped[JobStatus | None] = mapped_column(
        Enum(JobStatus, name="job_status", native_enum=True, create_type=False)
    )
    job_version: Mapped[int | None] = mapped_column(BigInteger)
    attempt: Mapped[int | None] = mapped_column(Integer)
    error_code: Mapped[str | None] = mapped_column(Text)
    error_message: Mapped[str | None] = mapped_column(Text)
    processing_time_ms: Mapped[int | None] = mapped_column(BigInteger)
    assessment_name: Mapped[str | None] = mapped_column(Text)
    charge_count: Mapped[int | None] = mapped_column(Integer)
    occurred_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class OutboxCursor(Base):
    """The relay's position, one row (migration 0009 explains it): every row of a transaction
    visible in ``done`` is published, and of those visible in ``batch`` but not in ``done``,
    the ones with ``seq <= batch_seq``."""

    __tablename__ = "outbox_cursor"
    __table_args__ = (CheckConstraint("one", name="one"),)

    one: Mapped[bool] = mapped_column(Boolean, primary_key=True, server_default=text("true"))
    done: Mapped[str] = mapped_column(PgSnapshot, nullable=False)
    batch: Mapped[str] = mapped_column(PgSnapshot, nullable=False)
    batch_seq: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default=text("0"))


class IdempotencyKey(Base):
    """The first reply to a (user, request_id) submission, replayed on repeats: the job, its
    cost and the balance after it."""

    __tablename__ = "idempotency_keys"

    user_id: Mapped[str] = mapped_column(Text, primary_key=True)
    request_id: Mapped[str] = mapped_column(Text, primary_key=True)
    payload_hash: Mapped[str] = mapped_column(Text, nullable=False)
    job_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    response: Mapped[bytes | None] = mapped_column(LargeBinary)
    """The stored first reply (keys written before migration 0003)."""
    token_cost: Mapped[int | None] = mapped_column(BigInteger)
    balance_after: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=NOW
    )


class Sweep(Base):
    """What one sweep did (``assay status`` shows the last); the newest 10,000 are kept."""

    __tablename__ = "sweeps"

    sweep_id: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    ran_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=NOW
    )
    found: Mapped[int] = mapped_column(Integer, nullable=False)
    failed: Mapped[int] = mapped_column(Integer, nullable=False)
    requeued: Mapped[int] = mapped_column(Integer, nullable=False)
    held_back: Mapped[bool] = mapped_column(Boolean, nullable=False)
    reason: Mapped[str] = mapped_column(Text, nullable=False, server_default=text("''"))
    in_flight: Mapped[int] = mapped_column(BigInteger, nullable=False)
    queued: Mapped[int] = mapped_column(BigInteger, nullable=False)


class Erasure(Base):
    """One erasure: a user's (EraseUserData, trigger ``request``) or a retention pass's
    (trigger ``retention``, no user). Who asked, when and how much was erased: never the data.
    ``finished_at`` is NULL while steps remain (a repeat of the request finishes them)."""

    __tablename__ = "erasures"
    __table_args__ = (
        CheckConstraint("trigger IN ('request', 'retention')", name="trigger_known"),
        Index(None, "user_id", "requested_at"),
    )

    request_id: Mapped[str] = mapped_column(Text, primary_key=True)
    user_id: Mapped[str | None] = mapped_column(Text)
    trigger: Mapped[str] = mapped_column(Text, nullable=False)
    requested_by: Mapped[str] = mapped_column(Text, nullable=False)
    requested_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=NOW
    )
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    jobs_cancelled: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    results_erased: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    outbox_messages_erased: Mapped[int] = mapped_column(
        Integer, nullable=False, server_default=text("0")
    )
    queue_messages_deleted: Mapped[int] = mapped_column(
        Integer, nullable=False, server_default=text("0")
    )


class UserTier(Base):
    """The tier an operator set for a user whose tokens name none (``assay users tier``)."""

    __tablename__ = "user_tiers"

    user_id: Mapped[str] = mapped_column(Text, primary_key=True)
    tier: Mapped[str] = mapped_column(Text, nullable=False)
    updated_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=NOW
    )


class AccessRecord(Base):
    """One read of a user's data by someone else: an operator, or an internal caller (through
    the assessment service, which names the end reader). A user's own reads are not recorded.
    Pruned by the sweep after ASSAY_ACCESS_RECORD_RETENTION."""

    __tablename__ = "access_records"
    __table_args__ = (Index(None, "user_id", "record_id"),)

    record_id: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    read_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=NOW
    )
    user_id: Mapped[str] = mapped_column(Text, nullable=False)
    """Whose data was read."""
    reader: Mapped[str] = mapped_column(Text, nullable=False)
    """The reader's token subject."""
    reader_identity: Mapped[str] = mapped_column(Text, nullable=False)
    """``operator``, ``caller`` or the Assay service that read (a row of the access table)."""
    via: Mapped[str] = mapped_column(Text, nullable=False, server_default=text("''"))
    """The service the read came through on the reader's behalf; empty when direct."""
    rpc: Mapped[str] = mapped_column(Text, nullable=False)
    job_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    result_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))


class ImportedJob(Base):
    """An original system's job imported (``assay import original``, migration 0014): its
    original id (the import's idempotency key) and what Assay's jobs have no column for."""

    __tablename__ = "imported_jobs"
    __table_args__ = (
        UniqueConstraint("job_id"),
        Index("ix_imported_jobs_result_id", "result_id", unique=True),
    )

    original_job_id: Mapped[str] = mapped_column(Text, primary_key=True)
    job_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False)
    result_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    user_id: Mapped[str] = mapped_column(Text, nullable=False)
    original_status: Mapped[str] = mapped_column(Text, nullable=False)
    original_priority: Mapped[int] = mapped_column(
        Integer, nullable=False, server_default=text("0")
    )
    original_retry_count: Mapped[int] = mapped_column(
        Integer, nullable=False, server_default=text("0")
    )
    in_flight: Mapped[str | None] = mapped_column(Text)
    """``queue`` or ``fail`` for a job in flight in the original; NULL otherwise."""
    imported_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=NOW
    )


class ImportedBalance(Base):
    """A user's original balance, as last imported (a later pass writes the difference)."""

    __tablename__ = "imported_balances"

    user_id: Mapped[str] = mapped_column(Text, primary_key=True)
    original_balance: Mapped[int] = mapped_column(BigInteger, nullable=False)
    imported_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=NOW
    )
    updated_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=NOW
    )
