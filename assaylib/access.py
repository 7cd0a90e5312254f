"""Who may call what: the identity × RPC table of ARCHITECTURE §6, in one place.

An identity is derived from a verified token: ``operator``, ``user`` and ``caller`` (an
internal service that is not one of Assay's own) from the roles; Assay's own four services
from the subject — a Kubernetes service account ``system:serviceaccount:<ns>:assay-<name>``,
or ``sub`` ``<name>`` with role ``service`` from the local stack's issuer. Each identity
reaches only the RPCs the table names; every other call is PERMISSION_DENIED.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

__all__ = [
    "ACCESS",
    "ALL",
    "IDENTITIES",
    "SERVICE_IDENTITIES",
    "AccessTable",
    "identity_of",
    "parse_reader",
    "reader_name",
]

ARCHIVE = "assay.archive.v1.ArchiveService"
ASSESSMENT = "assay.assessment.v1.AssessmentService"
NOTIFIER = "assay.notifier.v1.NotifierService"

SERVICE_IDENTITIES = ("assessment", "worker", "notifier", "sweep")
"""Assay's own services that call others (the archive calls no one)."""
IDENTITIES = ("user", "caller", "operator", *SERVICE_IDENTITIES)
"""Every identity the table knows; a token that is none of them reaches nothing."""
NO_IDENTITY = "none"
"""The identity of a verified token that carries no known role or service subject."""
ALL = frozenset({"*"})
"""Every method of a service."""
READER_TRUSTED = frozenset({"assessment", "operator"})
"""Identities whose ``GetResultRequest.reader`` (the end reader they read for) the archive
believes; from anyone else it is ignored and the caller itself is the reader."""

_SERVICE_ACCOUNT = re.compile(r"^system:serviceaccount:([^:]+):assay-([a-z]+)$")


def identity_of(subject: str, roles: Iterable[str], namespaces: Collection[str] = ()) -> str:
    """The identity of a token's subject and roles (``none`` when it has none). A service
    account counts only in one of ``namespaces`` (any namespace when empty)."""
    held = frozenset(roles)
    if "operator" in held:
        return "operator"
    account = _SERVICE_ACCOUNT.match(subject)
    if account is not None:
        namespace, name = account.groups()
        known = name in SERVICE_IDENTITIES and (not namespaces or namespace in namespaces)
        return name if known else NO_IDENTITY
    if "service" in held:
        return subject if subject in SERVICE_IDENTITIES else "caller"
    if "user" in held:
        return "user"
    return NO_IDENTITY


def reader_name(identity: str, subject: str) -> str:
    """The end reader as ``GetResultRequest.reader`` carries it: ``<identity>:<subject>``."""
    return f"{identity}:{subject}"


def parse_reader(name: str) -> tuple[str, str] | None:
    """``(identity, subject)`` of a ``reader_name``; None when it is not one."""
    identity, sep, subject = name.partition(":")
    return (identity, subject) if sep and identity in IDENTITIES and subject else None


@dataclass(frozen=True)
class AccessTable:
    """Per service, per identity, the methods it may call (``ALL``: every one)."""

    grants: Mapping[str, Mapping[str, frozenset[str]]]

    def allows(self, identity: str, method: str) -> bool:
        """Whether ``identity`` may call ``method`` (``/package.Service/Method``)."""
        service, _, name = method.lstrip("/").partition("/")
        methods = self.grants.get(service, {}).get(identity, frozenset())
        return methods is ALL or name in methods

    def methods(self, service: str, identity: str) -> frozenset[str]:
        """The methods of ``service`` that ``identity`` may call (``ALL`` for every one)."""
        return self.grants.get(service, {}).get(identity, frozenset())


ACCESS = AccessTable(
    {
        ASSESSMENT: {"user": ALL, "caller": ALL, "operator": ALL},
        NOTIFIER: {"user": ALL, "caller": ALL, "operator": ALL},
        ARCHIVE: {
            "operator": ALL,
            # What each service's archive client calls (assessment_svc/archive_client.py,
            # worker/archive_client.py, notifier/watch.py, assessment_svc/sweep.py).
            "assessment": frozenset(
                {
                    "CreateSubmission",
                    "CreateSubmissions",
                    "GetJob",
                    "ListJobs",
                    "GetResult",
                    "CancelJob",
                    "RetryJob",
                    "GetTokenBalance",
                }
            ),
            "worker": frozenset(
                {
                    "StartJob",
                    "StartJobs",
                    "Heartbeat",
                    "Heartbeats",
                    "CompleteJob",
                    "FailJob",
                    "ReportJobs",
                    "CreateResult",
                }
            ),
            "notifier": frozenset({"GetJob", "ListJobs"}),
            "sweep": frozenset({"ListStuckJobs", "SweepStuckJobs"}),
        },
    }
)
"""ARCHITECTURE §6's table. Operator-only archive RPCs (GrantTokens, UpdateResult, ListResults,
ListLedgerEntries, GetSystemStatus, ListAccessRecords, ImportOriginalJobs,
BatchGetImportedJobs, and any RPC added later) are in no service's row."""
