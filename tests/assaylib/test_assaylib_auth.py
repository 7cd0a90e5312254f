"""JWT tokens, the server AuthInterceptor and the client bearer-token interceptors."""

from __future__ import annotations

import json
import time

import grpc
import grpc.aio
import jwt
import pytest

from assaylib import errors
from assaylib.auth import (
    AuthInterceptor,
    Principal,
    bearer_token_interceptors,
    current_principal,
    mint_token,
    service_token_provider,
    verify_token,
)
from assaylib.error_mapping import ErrorMappingInterceptor
from tests.assaylib.conftest import ServerFactory, probe_stream, probe_unary

SECRET = "test-secret-0123456789-0123456789-abcdef"  # the same as conftest's jwt_secret


def test_round_trip() -> None:
    token = mint_token(SECRET, "user-1", ["user"])
    assert verify_token(SECRET, token) == Principal("user-1", frozenset({"user"}))
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["iss"] == claims["aud"] == "assay"
    assert claims["exp"] - claims["iat"] == 3600


def test_expired_token() -> None:
    token = mint_token(SECRET, "user-1", ["user"], ttl=1)
    claims = jwt.decode(token, options={"verify_signature": False})
    claims["exp"] = int(time.time()) - 10
    expired = jwt.encode(claims, SECRET, algorithm="HS256")
    with pytest.raises(errors.Unauthenticated, match="expired"):
        verify_token(SECRET, expired)


def test_wrong_secret() -> None:
    token = mint_token("another-secret-0123456789-0123456789", "user-1", ["user"])
    with pytest.raises(errors.Unauthenticated, match="signature"):
        verify_token(SECRET, token)


def _forge(**overrides: object) -> str:
    now = int(time.time())
    claims: dict[str, object] = {
        "iss": "assay",
        "aud": "assay",
        "sub": "u",
        "roles": ["user"],
        "iat": now,
        "exp": now + 60,
    }
    claims.update(overrides)
    return jwt.encode({k: v for k, v in claims.items() if v is not None}, SECRET, "HS256")


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"aud": "other"}, "audience"),
        ({"iss": "other"}, "issuer"),
        ({"roles": ["admin"]}, "unknown roles"),
        ({"roles": "user"}, "roles"),
        ({"sub": None}, "sub"),
        ({"sub": ""}, "subject"),
        ({"exp": None}, "exp"),
    ],
)
def test_bad_claims(overrides: dict[str, object], match: str) -> None:
    with pytest.raises(errors.Unauthenticated, match=match):
        verify_token(SECRET, _forge(**overrides))


def test_garbage_token() -> None:
    with pytest.raises(errors.Unauthenticated, match="malformed"):
        verify_token(SECRET, "not-a-jwt")


def test_short_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        mint_token("short", "u", ["user"])
    with pytest.raises(ValueError, match="32 bytes"):
        AuthInterceptor("", {"user"})


def test_mint_refuses_unknown_roles() -> None:
    with pytest.raises(ValueError, match="unknown roles"):
        mint_token(SECRET, "u", ["root"])


def test_principal_permissions() -> None:
    user = Principal("u1", frozenset({"user"}))
    assert user.can_act_for("u1")
    assert not user.can_act_for("u2")
    assert not user.is_operator and not user.is_service
    operator = Principal("ops", frozenset({"operator"}))
    assert operator.is_operator and operator.can_act_for("u2")
    service = Principal("assessment", frozenset({"service"}))
    assert service.is_service and service.can_act_for("u2")


def test_current_principal_outside_a_call() -> None:
    with pytest.raises(errors.Unauthenticated):
        current_principal()


def test_service_token_provider_reuses_then_remints() -> None:
    provide = service_token_provider(SECRET, "worker", ttl=3600)
    first = provide()
    assert provide() is first
    assert verify_token(SECRET, first) == Principal("worker", frozenset({"service"}))
    # A ttl shorter than the refresh margin re-mints within half the ttl.
    short = service_token_provider(SECRET, "worker", ttl=0.0001)
    assert verify_token(SECRET, short()).is_service


def _interceptors(roles: set[str]) -> list[grpc.aio.ServerInterceptor]:
    return [ErrorMappingInterceptor(), AuthInterceptor(SECRET, roles)]


async def test_no_token_is_unauthenticated(probe_channel_for: ServerFactory) -> None:
    channel = await probe_channel_for(_interceptors({"user"}))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await probe_unary(channel, "Whoami")(b"", timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert errors.reason_of(caught.value) == "UNAUTHENTICATED"
    assert "authorization" in (caught.value.details() or "")


@pytest.mark.parametrize("header", ["Basic abc", "Bearer", "Bearer not-a-jwt", "token"])
async def test_malformed_header_is_unauthenticated(
    probe_channel_for: ServerFactory, header: str
) -> None:
    channel = await probe_channel_for(_interceptors({"user"}))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await probe_unary(channel, "Whoami")(b"", metadata=(("authorization", header),), timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_role_not_allowed_is_permission_denied(probe_channel_for: ServerFactory) -> None:
    channel = await probe_channel_for(_interceptors({"service", "operator"}))
    token = mint_token(SECRET, "user-1", ["user"])
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await probe_unary(channel, "Whoami")(
            b"", metadata=(("authorization", f"Bearer {token}"),), timeout=10
        )
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert isinstance(errors.error_from_rpc(caught.value), errors.PermissionDenied)


async def test_auth_interceptor_alone_aborts_with_rich_status(
    probe_channel_for: ServerFactory,
) -> None:
    channel = await probe_channel_for([AuthInterceptor(SECRET, {"user"})])
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await probe_unary(channel, "Whoami")(b"", timeout=10)
    assert isinstance(errors.error_from_rpc(caught.value), errors.Unauthenticated)


async def test_valid_token_reaches_handler_with_principal(
    probe_channel_for: ServerFactory,
) -> None:
    channel = await probe_channel_for(_interceptors({"user", "operator"}))
    token = mint_token(SECRET, "user-7", ["user", "operator"])
    reply = await probe_unary(channel, "Whoami")(
        b"", metadata=(("authorization", f"Bearer {token}"),), timeout=10
    )
    assert json.loads(reply) == {"user_id": "user-7", "roles": ["operator", "user"]}


async def test_client_interceptors_cover_unary_andprobe_stream(
    probe_channel_for: ServerFactory,
) -> None:
    provide = service_token_provider(SECRET, "notifier")
    channel = await probe_channel_for(
        _interceptors({"service"}), client_interceptors=bearer_token_interceptors(provide)
    )
    reply = await probe_unary(channel, "Whoami")(b"", timeout=10)
    assert json.loads(reply)["user_id"] == "notifier"
    streamed = [m async for m in probe_stream(channel, "Stream")(b"", timeout=10)]
    assert streamed == [b"notifier", b"notifier"]


async def test_client_token_replaces_caller_authorization(
    probe_channel_for: ServerFactory,
) -> None:
    channel = await probe_channel_for(
        _interceptors({"user"}),
        client_interceptors=bearer_token_interceptors(mint_token(SECRET, "u2", ["user"])),
    )
    reply = await probe_unary(channel, "Whoami")(
        b"", metadata=(("authorization", "Bearer stale"),), timeout=10
    )
    assert json.loads(reply)["user_id"] == "u2"


def test_a_remembered_token_is_checked_again_once_it_expires() -> None:
    interceptor = AuthInterceptor(SECRET, {"user"})
    token = mint_token(SECRET, "u1", ["user"])
    assert interceptor.authenticate([("authorization", f"Bearer {token}")]).user_id == "u1"
    # A remembered entry past its expiry is not trusted: the token is verified again.
    forged = "not.a.token"
    interceptor._verified_tokens[forged] = (Principal("u1", frozenset({"user"})), time.time() - 1)
    with pytest.raises(errors.Unauthenticated):
        interceptor.authenticate([("authorization", f"Bearer {forged}")])
