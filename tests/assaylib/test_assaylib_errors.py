"""Domain errors reach clients as rich gRPC statuses, and come back as the same errors."""

from __future__ import annotations

import logging

import grpc
import grpc.aio
import pytest
from google.rpc import error_details_pb2

from assaylib import errors
from assaylib.error_mapping import ErrorMappingInterceptor
from assaylib.errors import FieldViolation
from tests.assaylib.conftest import ServerFactory, probe_stream, probe_unary


async def _fail(channel: grpc.aio.Channel, kind: str) -> grpc.aio.AioRpcError:
    call = probe_unary(channel, "Fail")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(kind.encode(), timeout=10)
    return caught.value


async def test_invalid_argument_carries_field_violations(
    probe_channel_for: ServerFactory,
) -> None:
    channel = await probe_channel_for([ErrorMappingInterceptor()])
    err = await _fail(channel, "invalid")
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "assessment_data.riasec.realistic" in (err.details() or "")
    recovered = errors.error_from_rpc(err)
    assert isinstance(recovered, errors.InvalidArgument)
    assert errors.field_violations_of(err) == [
        FieldViolation("assessment_data.riasec.realistic", "must be 0-100"),
        FieldViolation("request_id", "must be a UUID"),
    ]
    assert errors.reason_of(err) == "INVALID_ARGUMENT"


@pytest.mark.parametrize(
    ("kind", "code", "cls", "reason"),
    [
        (
            "tokens",
            grpc.StatusCode.FAILED_PRECONDITION,
            errors.InsufficientTokens,
            "INSUFFICIENT_TOKENS",
        ),
        (
            "transition",
            grpc.StatusCode.FAILED_PRECONDITION,
            errors.InvalidTransition,
            "INVALID_TRANSITION",
        ),
        ("not_found", grpc.StatusCode.NOT_FOUND, errors.NotFound, "NOT_FOUND"),
        (
            "resume",
            grpc.StatusCode.OUT_OF_RANGE,
            errors.ResumeTokenExpired,
            "RESUME_TOKEN_EXPIRED",
        ),
    ],
)
async def test_domain_error_arrives_with_error_info(
    probe_channel_for: ServerFactory,
    kind: str,
    code: grpc.StatusCode,
    cls: type[errors.AssayError],
    reason: str,
) -> None:
    channel = await probe_channel_for([ErrorMappingInterceptor()])
    err = await _fail(channel, kind)
    assert err.code() == code
    rich = errors.rich_status_of(err)
    assert rich is not None
    info = error_details_pb2.ErrorInfo()
    assert rich.details[0].Unpack(info)
    assert (info.reason, info.domain) == (reason, "assay")
    recovered = errors.error_from_rpc(err)
    assert type(recovered) is cls
    assert recovered.code == code
    assert recovered.reason == reason
    assert recovered.message == err.details()


async def test_insufficient_tokens_keeps_metadata(probe_channel_for: ServerFactory) -> None:
    channel = await probe_channel_for([ErrorMappingInterceptor()])
    recovered = errors.error_from_rpc(await _fail(channel, "tokens"))
    assert recovered.metadata == {"balance": "0"}


async def test_unexpected_exception_is_internal_without_its_text(
    probe_channel_for: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    channel = await probe_channel_for([ErrorMappingInterceptor()])
    with caplog.at_level(logging.ERROR, logger="assaylib.error_mapping"):
        err = await _fail(channel, "boom")
    assert err.code() == grpc.StatusCode.INTERNAL
    assert err.details() == "internal error"
    assert "hunter2" not in str(err)
    assert "hunter2" in caplog.text  # the traceback is logged server-side
    assert errors.reason_of(err) == "INTERNAL"


async def test_connection_failure_is_unavailable(probe_channel_for: ServerFactory) -> None:
    channel = await probe_channel_for([ErrorMappingInterceptor()])
    err = await _fail(channel, "refused")
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    assert "10.0.0.1" not in (err.details() or "")
    assert isinstance(errors.error_from_rpc(err), errors.Unavailable)


async def test_timeout_is_deadline_exceeded(probe_channel_for: ServerFactory) -> None:
    channel = await probe_channel_for([ErrorMappingInterceptor()])
    err = await _fail(channel, "timeout")
    assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED


async def test_error_in_a_stream_is_mapped(probe_channel_for: ServerFactory) -> None:
    channel = await probe_channel_for([ErrorMappingInterceptor()])
    # No auth interceptor: current_principal() raises Unauthenticated inside the stream.
    call = probe_stream(channel, "Stream")(b"", timeout=10)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in call:
            pass
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert errors.reason_of(caught.value) == "UNAUTHENTICATED"


async def test_downstream_error_passes_through_unchanged(
    probe_channel_for: ServerFactory,
) -> None:
    downstream = await probe_channel_for([ErrorMappingInterceptor()])

    async def relay(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        result: bytes = await probe_unary(downstream, "Fail")(request, timeout=10)
        return result

    server = grpc.aio.server(interceptors=[ErrorMappingInterceptor()])
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                "assaytest.Relay", {"Fail": grpc.unary_unary_rpc_method_handler(relay)}
            )
        ]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await probe_unary(channel, "/assaytest.Relay/Fail")(b"invalid", timeout=10)
    finally:
        await server.stop(None)
    err = caught.value
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in errors.field_violations_of(err)] == [
        "assessment_data.riasec.realistic",
        "request_id",
    ]


def test_invalid_argument_default_message_names_fields() -> None:
    err = errors.InvalidArgument([FieldViolation("a.b", "bad"), FieldViolation("c", "worse")])
    assert err.message == "invalid a.b, c"
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT


def test_reason_override_and_status() -> None:
    err = errors.FailedPrecondition("nope", reason="JOB_TERMINAL")
    assert err.reason == "JOB_TERMINAL"
    status = err.to_status()
    assert status.code == grpc.StatusCode.FAILED_PRECONDITION
    assert status.details == "nope"
    assert errors.FailedPrecondition.reason == "FAILED_PRECONDITION"


def test_reason_of_other_exceptions_is_empty() -> None:
    assert errors.reason_of(ValueError("x")) == ""
    assert errors.field_violations_of(ValueError("x")) == []
