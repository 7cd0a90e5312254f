"""The identity × RPC matrix of ARCHITECTURE §6, against the real services: every RPC of the
archive, assessment and notifier services, called by every identity. An RPC outside an
identity's row is PERMISSION_DENIED (and counted); one inside it gets past authorization
(whatever an empty request then earns: INVALID_ARGUMENT, NOT_FOUND, OK …)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import grpc
import grpc.aio
import pytest
from prometheus_client import REGISTRY

from archive_svc.app import ArchiveApp
from assay.archive.v1 import archive_service_pb2
from assay.assessment.v1 import assessment_service_pb2
from assay.notifier.v1 import notifier_service_pb2
from assaylib.access import ACCESS, ALL
from assaylib.config import Settings
from assessment_svc.app import AssessmentApp
from notifier.app import NotifierApp
from tests.conftest import ISSUER

ARCHIVE = archive_service_pb2.DESCRIPTOR.services_by_name["ArchiveService"]
ASSESSMENT = assessment_service_pb2.DESCRIPTOR.services_by_name["AssessmentService"]
NOTIFIER = notifier_service_pb2.DESCRIPTOR.services_by_name["NotifierService"]

# The contract's table, written out here on purpose (not read from assaylib.access).
ARCHIVE_ROWS = {
    "assessment": {
        "CreateSubmission",
        "CreateSubmissions",
        "GetJob",
        "ListJobs",
        "GetResult",
        "CancelJob",
        "RetryJob",
        "GetTokenBalance",
    },
    "worker": {
        "StartJob",
        "StartJobs",
        "Heartbeat",
        "Heartbeats",
        "CompleteJob",
        "FailJob",
        "ReportJobs",
        "CreateResult",
    },
    "notifier": {"GetJob", "ListJobs"},
    "sweep": {"ListStuckJobs", "SweepStuckJobs"},
}
OPERATOR_ONLY = {
    "GrantTokens",
    "UpdateResult",
    "ListResults",
    "ListLedgerEntries",
    "GetSystemStatus",
    "ListAccessRecords",
}
TOKENS = {
    "user": ISSUER.mint("alice", ["user"]),
    "caller": ISSUER.mint("billing", ["service"]),
    "operator": ISSUER.mint("ops", ["operator"]),
    **{name: ISSUER.mint_service(name) for name in ARCHIVE_ROWS},
    # Kubernetes' projected service-account tokens: no roles, the account is the identity.
    **{
        f"{name} (service account)": ISSUER.mint(f"system:serviceaccount:assay:assay-{name}")
        for name in ARCHIVE_ROWS
    },
    "another service account": ISSUER.mint("system:serviceaccount:assay:default"),
}


def expected(service: str, method: str, holder: str) -> bool:
    """Whether the contract lets the token's holder call ``service``'s ``method``."""
    identity = holder.removesuffix(" (service account)")
    if identity == "operator":
        return True
    if service == ARCHIVE.full_name:
        return method in ARCHIVE_ROWS.get(identity, set())
    return identity in ("user", "caller")  # the assessment service and the notifier


def test_the_table_in_code_is_the_contracts() -> None:
    for identity, methods in ARCHIVE_ROWS.items():
        assert ACCESS.methods(ARCHIVE.full_name, identity) == methods
    assert ACCESS.methods(ARCHIVE.full_name, "operator") is ALL
    archive_rpcs = {method.name for method in ARCHIVE.methods}
    assert archive_rpcs >= OPERATOR_ONLY
    assert not OPERATOR_ONLY & set().union(*ARCHIVE_ROWS.values())
    assert set().union(*ARCHIVE_ROWS.values()) <= archive_rpcs


@dataclasses.dataclass
class Mesh:
    """The three services with RPCs, in-process."""

    ports: dict[str, int]


@pytest.fixture
async def mesh(settings: Settings, archive: ArchiveApp) -> AsyncIterator[Mesh]:
    """The archive, assessment and notifier services against the real servers."""
    wired = dataclasses.replace(settings, archive_addr=f"127.0.0.1:{archive.port}")
    assessment = await AssessmentApp.start(wired, "127.0.0.1:0")
    notifier = await NotifierApp.start(wired, "127.0.0.1:0")
    yield Mesh(
        {
            ARCHIVE.full_name: archive.port,
            ASSESSMENT.full_name: assessment.port,
            NOTIFIER.full_name: notifier.port,
        }
    )
    await notifier.stop(grace=0.5)
    await assessment.stop(grace=0.5)


async def _call(
    channel: grpc.aio.Channel, path: str, streaming: bool, token: str
) -> grpc.StatusCode:
    """The status an empty request earns (a stream: its first message or its end)."""
    metadata = (("authorization", f"Bearer {token}"),)
    try:
        if streaming:
            call = channel.unary_stream(path, request_serializer=bytes, response_deserializer=bytes)
            stream = call(b"", metadata=metadata, timeout=2)
            async for _ in stream:
                break  # a first message: authorized
            stream.cancel()
            return grpc.StatusCode.OK
        unary = channel.unary_unary(path, request_serializer=bytes, response_deserializer=bytes)
        await unary(b"", metadata=metadata, timeout=10)
        return grpc.StatusCode.OK
    except grpc.aio.AioRpcError as err:
        return err.code()


def _denied_count() -> float:
    total = 0.0
    for metric in REGISTRY.collect():
        if metric.name == "assay_rpc_denied":
            total += sum(s.value for s in metric.samples if s.name.endswith("_total"))
    return total


async def test_every_identity_reaches_exactly_its_rpcs(mesh: Mesh) -> None:
    wrong: list[str] = []
    denials = 0
    before = _denied_count()
    for service in (ARCHIVE, ASSESSMENT, NOTIFIER):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{mesh.ports[service.full_name]}") as ch:
            for method in service.methods:
                path = f"/{service.full_name}/{method.name}"
                for holder, token in TOKENS.items():
                    code = await _call(ch, path, method.server_streaming, token)
                    allowed = expected(service.full_name, method.name, holder)
                    denials += not allowed
                    if code == grpc.StatusCode.UNAUTHENTICATED or (
                        allowed == (code == grpc.StatusCode.PERMISSION_DENIED)
                    ):
                        wrong.append(f"{holder} → {method.name}: {code.name}")
    assert wrong == []
    assert _denied_count() - before == denials
