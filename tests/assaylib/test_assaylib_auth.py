"""Token verification by public keys (JWKS), identities, the AuthInterceptor and the client
side (bearer interceptors, token files)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.server
import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import grpc.aio
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from prometheus_client import REGISTRY

from assaylib import auth, errors
from assaylib.access import identity_of
from assaylib.auth import (
    AuthInterceptor,
    Principal,
    bearer_token_interceptors,
    current_principal,
    file_token_provider,
    principal_of,
)
from assaylib.error_mapping import ErrorMappingInterceptor
from assaylib.issuer import Issuer, write_jwks
from assaylib.keys import TokenVerifier, VerifierSettings
from tests.assaylib.conftest import PROBE, PROBE_ACCESS, ServerFactory, probe_stream, probe_unary
from tests.conftest import ISSUER, Trust, token


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _claims(**overrides: object) -> dict[str, object]:
    now = int(time.time())
    claims: dict[str, object] = {
        "iss": "assay",
        "aud": "assay",
        "sub": "user-1",
        "roles": ["user"],
        "iat": now,
        "exp": now + 600,
    }
    claims.update(overrides)
    return claims


def _unsigned(header: dict[str, object], claims: dict[str, object], key: bytes = b"") -> str:
    """A token put together by hand: HMAC-SHA256 over it with ``key``, or no signature."""
    signing_input = (
        _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(claims).encode())
    ).encode()
    signature = hmac.new(key, signing_input, hashlib.sha256).digest() if key else b""
    return signing_input.decode() + "." + _b64(signature)


def _verifier(jwks: Path, **settings: object) -> TokenVerifier:
    return TokenVerifier(VerifierSettings(**settings), jwks_file=str(jwks), refresh=300.0)  # type: ignore[arg-type]


@pytest.fixture
def verifier(trust: Trust) -> TokenVerifier:
    """A verifier of the suite issuer's tokens."""
    return _verifier(trust.jwks_file)


async def test_round_trip(verifier: TokenVerifier) -> None:
    claims = await verifier.claims(token("user", "user-1"))
    assert principal_of(claims, "roles") == Principal("user-1", frozenset({"user"}))


@pytest.mark.parametrize("algorithm", ["ES256", "EdDSA", "RS256"])
async def test_every_accepted_algorithm_verifies(tmp_path: Path, algorithm: str) -> None:
    issuer = Issuer.generate(algorithm)
    write_jwks(tmp_path / "jwks.json", [issuer])
    claims = await _verifier(tmp_path / "jwks.json").claims(issuer.mint("u1", ["user"]))
    assert claims["sub"] == "u1"


def _public_pem() -> bytes:
    return ISSUER.key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


BAD_TOKENS: dict[str, Callable[[], str]] = {
    "expired": lambda: ISSUER.mint("u1", ["user"], exp=int(time.time()) - 60),
    "wrong issuer": lambda: Issuer(ISSUER.key, issuer="evil").mint("u1", ["user"]),
    "wrong audience": lambda: Issuer(ISSUER.key, audience="other").mint("u1", ["user"]),
    "unknown kid": lambda: Issuer.generate().mint("u1", ["operator"]),
    "no kid": lambda: jwt.encode(_claims(), ISSUER.key, algorithm="ES256"),
    "no exp": lambda: jwt.encode(
        {k: v for k, v in _claims().items() if k != "exp"},
        ISSUER.key,
        algorithm="ES256",
        headers={"kid": ISSUER.kid},
    ),
    "HS256": lambda: jwt.encode(
        _claims(roles=["operator"]),
        "a-shared-secret-of-thirty-two-bytes!!",
        algorithm="HS256",
        headers={"kid": ISSUER.kid},
    ),
    "none": lambda: _unsigned({"alg": "none", "typ": "JWT", "kid": ISSUER.kid}, _claims()),
    "algorithm confusion (HS256 keyed with the public key)": lambda: _unsigned(
        {"alg": "HS256", "typ": "JWT", "kid": ISSUER.kid},
        _claims(roles=["operator"]),
        _public_pem(),
    ),
    "alg not the key's (RS256 header on an ES256 key)": lambda: _unsigned(
        {"alg": "RS256", "typ": "JWT", "kid": ISSUER.kid}, _claims(), _public_pem()
    ),
    "tampered payload": lambda: (
        lambda parts: ".".join(
            [parts[0], _b64(json.dumps(_claims(roles=["operator"])).encode()), parts[2]]
        )
    )(ISSUER.mint("u1", ["user"]).split(".")),
    "not a jwt": lambda: "not-a-jwt",
}


@pytest.mark.parametrize("name", sorted(BAD_TOKENS))
async def test_bad_tokens_are_unauthenticated(verifier: TokenVerifier, name: str) -> None:
    with pytest.raises(errors.Unauthenticated):
        await verifier.claims(BAD_TOKENS[name]())


@pytest.mark.parametrize("name", sorted(BAD_TOKENS))
async def test_bad_tokens_are_unauthenticated_over_grpc(
    probe_channel_for: ServerFactory, verifier: TokenVerifier, name: str
) -> None:
    channel = await probe_channel_for(_interceptors(verifier))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await probe_unary(channel, "Whoami")(
            b"", metadata=(("authorization", f"Bearer {BAD_TOKENS[name]()}"),), timeout=10
        )
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_several_issuers_are_accepted(trust: Trust) -> None:
    verifier = _verifier(trust.jwks_file, issuers=("https://kubernetes.default.svc", "assay"))
    cluster = Issuer(ISSUER.key, issuer="https://kubernetes.default.svc")
    assert (await verifier.claims(cluster.mint("u1", ["user"])))["sub"] == "u1"
    assert (await verifier.claims(ISSUER.mint("u2", ["user"])))["sub"] == "u2"


async def test_roles_come_from_the_configured_claim(trust: Trust) -> None:
    verifier = _verifier(trust.jwks_file, roles_claim="realm_access.roles")
    minted = ISSUER.mint("ops", realm_access={"roles": ["operator", "offline_access"]})
    claims = await verifier.claims(minted)
    principal = principal_of(claims, "realm_access.roles")
    assert principal.roles == {"operator"}  # roles Assay does not know are ignored
    assert principal_of({"sub": "u", "scope": "user openid"}, "scope").roles == {"user"}
    with pytest.raises(errors.Unauthenticated):
        principal_of({"sub": "u", "roles": [1]}, "roles")


async def test_rotation_two_keys_then_one(tmp_path: Path) -> None:
    old, new = Issuer.generate(), Issuer.generate("EdDSA")
    jwks = tmp_path / "jwks.json"
    write_jwks(jwks, [old, new])
    verifier = _verifier(jwks)
    interceptor = AuthInterceptor(verifier, PROBE_ACCESS)
    old_token, new_token = old.mint("u-old", ["user"]), new.mint("u-new", ["user"])
    method = f"/{PROBE}/Whoami"
    for minted in (old_token, new_token):  # both verify (and are remembered)
        assert await interceptor.authenticate([("authorization", f"Bearer {minted}")], method)
    write_jwks(jwks, [new])
    await verifier.refresh()
    assert verifier.kids == {new.kid}
    with pytest.raises(errors.Unauthenticated, match="not in the JWKS"):
        await interceptor.authenticate([("authorization", f"Bearer {old_token}")], method)
    principal = await interceptor.authenticate([("authorization", f"Bearer {new_token}")], method)
    assert principal.user_id == "u-new"


async def test_an_unknown_kid_rereads_the_jwks_at_once(tmp_path: Path) -> None:
    first, second = Issuer.generate(), Issuer.generate()
    jwks = tmp_path / "jwks.json"
    write_jwks(jwks, [first])
    verifier = _verifier(jwks)
    await verifier.claims(first.mint("u1", ["user"]))
    write_jwks(jwks, [first, second])  # published after the last read
    assert (await verifier.claims(second.mint("u2", ["user"])))["sub"] == "u2"


async def test_a_periodic_refresh_drops_a_removed_key(tmp_path: Path) -> None:
    first, second = Issuer.generate(), Issuer.generate()
    jwks = tmp_path / "jwks.json"
    write_jwks(jwks, [first, second])
    verifier = TokenVerifier(VerifierSettings(), jwks_file=str(jwks), refresh=0.0)
    minted = first.mint("u1", ["user"])
    await verifier.claims(minted)
    write_jwks(jwks, [second])
    with pytest.raises(errors.Unauthenticated):  # refresh 0: every call re-reads
        await verifier.claims(minted)


async def test_an_unreadable_jwks_keeps_the_keys_held(tmp_path: Path) -> None:
    jwks = tmp_path / "jwks.json"
    write_jwks(jwks, [ISSUER])
    verifier = _verifier(jwks)
    await verifier.refresh()
    for broken in ("{not json", "[]", '{"keys": 1}'):
        jwks.write_text(broken)
        await verifier.refresh()
        assert verifier.kids == {ISSUER.kid}
    jwks.unlink()
    await verifier.refresh()
    assert verifier.kids == {ISSUER.kid}


async def test_private_and_symmetric_keys_in_a_jwks_are_ignored(tmp_path: Path) -> None:
    key = ISSUER.key
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key))
    jwks = tmp_path / "jwks.json"
    jwks.write_text(
        json.dumps(
            {"keys": [{**jwk, "kid": "private"}, {"kty": "oct", "k": "c2VjcmV0", "kid": "s"}]}
        )
    )
    verifier = _verifier(jwks)
    await verifier.refresh()
    assert verifier.kids == set()


@pytest.mark.parametrize(
    ("subject", "roles", "identity"),
    [
        ("alice", {"user"}, "user"),
        ("ops", {"operator"}, "operator"),
        ("ops", {"operator", "user"}, "operator"),
        ("billing", {"service"}, "caller"),
        ("worker", {"service"}, "worker"),
        ("sweep", {"service"}, "sweep"),
        ("system:serviceaccount:assay:assay-worker", set(), "worker"),
        ("system:serviceaccount:prod:assay-assessment", set(), "assessment"),
        ("system:serviceaccount:assay:assay-archive", set(), "none"),
        ("system:serviceaccount:assay:default", set(), "none"),
        ("system:serviceaccount:assay:assay-worker", {"user"}, "worker"),
        ("worker", {"user"}, "user"),
        ("nobody", set(), "none"),
    ],
)
def test_identities(subject: str, roles: set[str], identity: str) -> None:
    assert identity_of(subject, roles) == identity
    assert Principal(subject, frozenset(roles)).identity == identity


def test_service_accounts_count_only_in_the_configured_namespaces() -> None:
    worker = "system:serviceaccount:assay:assay-worker"
    stranger = "system:serviceaccount:tenant-b:assay-worker"
    assert identity_of(worker, set(), ["assay"]) == "worker"
    assert identity_of(stranger, set(), ["assay"]) == "none"
    assert identity_of(stranger, set()) == "worker"  # no namespaces configured: any
    claims = {"sub": stranger, "exp": 1}
    assert principal_of(claims, "roles", ("assay", "assay-staging")).identity == "none"
    assert principal_of(claims).identity == "worker"


def test_principal_permissions() -> None:
    user = Principal("u1", frozenset({"user"}))
    assert user.can_act_for("u1")
    assert not user.can_act_for("u2")
    assert not user.is_operator and not user.is_service
    operator = Principal("ops", frozenset({"operator"}))
    assert operator.is_operator and operator.can_act_for("u2")
    caller = Principal("billing", frozenset({"service"}))
    assert caller.is_service and caller.can_act_for("u2")
    assert not Principal("nobody", frozenset()).can_act_for("u2")


def test_current_principal_outside_a_call() -> None:
    with pytest.raises(errors.Unauthenticated):
        current_principal()


def _interceptors(verifier: TokenVerifier) -> list[grpc.aio.ServerInterceptor]:
    return [ErrorMappingInterceptor(), AuthInterceptor(verifier, PROBE_ACCESS)]


async def test_no_token_is_unauthenticated(
    probe_channel_for: ServerFactory, verifier: TokenVerifier
) -> None:
    channel = await probe_channel_for(_interceptors(verifier))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await probe_unary(channel, "Whoami")(b"", timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert errors.reason_of(caught.value) == "UNAUTHENTICATED"
    assert "authorization" in (caught.value.details() or "")


@pytest.mark.parametrize("header", ["Basic abc", "Bearer", "Bearer not-a-jwt", "token"])
async def test_malformed_header_is_unauthenticated(
    probe_channel_for: ServerFactory, verifier: TokenVerifier, header: str
) -> None:
    channel = await probe_channel_for(_interceptors(verifier))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await probe_unary(channel, "Whoami")(b"", metadata=(("authorization", header),), timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


def _denied(identity: str, method: str) -> float:
    labels = {"identity": identity, "method": method}
    return REGISTRY.get_sample_value("assay_rpc_denied_total", labels) or 0.0


async def test_an_identity_outside_the_table_is_denied_logged_and_counted(
    probe_channel_for: ServerFactory, verifier: TokenVerifier, caplog: pytest.LogCaptureFixture
) -> None:
    channel = await probe_channel_for(_interceptors(verifier))
    before = _denied("worker", f"{PROBE}/Whoami")
    with (
        caplog.at_level(logging.WARNING, logger="assaylib.auth"),
        pytest.raises(grpc.aio.AioRpcError) as caught,
    ):
        await probe_unary(channel, "Whoami")(
            b"", metadata=(("authorization", f"Bearer {token('service', 'worker')}"),), timeout=10
        )
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert isinstance(errors.error_from_rpc(caught.value), errors.PermissionDenied)
    assert "'worker'" in (caught.value.details() or "")
    assert f"{PROBE}/Whoami" in (caught.value.details() or "")
    assert _denied("worker", f"{PROBE}/Whoami") == before + 1
    assert any("worker" in r.getMessage() and "Whoami" in r.getMessage() for r in caplog.records)


async def test_auth_interceptor_alone_aborts_with_rich_status(
    probe_channel_for: ServerFactory, verifier: TokenVerifier
) -> None:
    channel = await probe_channel_for([AuthInterceptor(verifier, PROBE_ACCESS)])
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await probe_unary(channel, "Whoami")(b"", timeout=10)
    assert isinstance(errors.error_from_rpc(caught.value), errors.Unauthenticated)


async def test_valid_token_reaches_handler_with_principal(
    probe_channel_for: ServerFactory, verifier: TokenVerifier
) -> None:
    channel = await probe_channel_for(_interceptors(verifier))
    minted = ISSUER.mint("user-7", ["user", "auditor"])
    reply = await probe_unary(channel, "Whoami")(
        b"", metadata=(("authorization", f"Bearer {minted}"),), timeout=10
    )
    assert json.loads(reply) == {"user_id": "user-7", "roles": ["user"]}


async def test_client_interceptors_cover_unary_and_stream(
    probe_channel_for: ServerFactory, verifier: TokenVerifier, tmp_path: Path
) -> None:
    path = tmp_path / "token"
    path.write_text(token("user", "from-file") + "\n")
    channel = await probe_channel_for(
        _interceptors(verifier),
        client_interceptors=bearer_token_interceptors(file_token_provider(path)),
    )
    reply = await probe_unary(channel, "Whoami")(b"", timeout=10)
    assert json.loads(reply)["user_id"] == "from-file"
    streamed = [m async for m in probe_stream(channel, "Stream")(b"", timeout=10)]
    assert streamed == [b"from-file", b"from-file"]


async def test_client_token_replaces_caller_authorization(
    probe_channel_for: ServerFactory, verifier: TokenVerifier
) -> None:
    channel = await probe_channel_for(
        _interceptors(verifier),
        client_interceptors=bearer_token_interceptors(token("user", "u2")),
    )
    reply = await probe_unary(channel, "Whoami")(
        b"", metadata=(("authorization", "Bearer stale"),), timeout=10
    )
    assert json.loads(reply)["user_id"] == "u2"


def test_a_token_file_is_reread_when_it_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(auth, "TOKEN_FILE_CHECK", 0.0)
    path = tmp_path / "token"
    path.write_text("first\n")
    provide = file_token_provider(path)
    assert provide() == "first"
    renewed = tmp_path / "token.new"
    renewed.write_text("second-and-longer\n")
    renewed.replace(path)  # as the kubelet and the stack's renewer do: a new file
    assert provide() == "second-and-longer"
    path.unlink()
    assert provide() == "second-and-longer"  # a missing file keeps the last token
    with pytest.raises(errors.Unauthenticated):
        file_token_provider(tmp_path / "absent")()


async def test_a_remembered_token_is_checked_again_once_it_expires(
    verifier: TokenVerifier,
) -> None:
    interceptor = AuthInterceptor(verifier, PROBE_ACCESS)
    method = f"/{PROBE}/Whoami"
    minted = token("user", "u1")
    principal = await interceptor.authenticate([("authorization", f"Bearer {minted}")], method)
    assert principal.user_id == "u1"
    # A remembered entry past its expiry is not trusted: the token is verified again.
    forged = "not.a.token"
    interceptor._verified_tokens[forged] = (Principal("u1", frozenset({"user"})), time.time() - 1)
    with pytest.raises(errors.Unauthenticated):
        await interceptor.authenticate([("authorization", f"Bearer {forged}")], method)


class _JwksHandler(http.server.BaseHTTPRequestHandler):
    document = b""
    fetches = 0

    def do_GET(self) -> None:
        type(self).fetches += 1
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(self.document)

    def log_message(self, *args: object) -> None:
        pass


async def test_a_jwks_url_is_fetched_once_and_cached(tmp_path: Path) -> None:
    write_jwks(tmp_path / "jwks.json", [ISSUER])
    _JwksHandler.document = (tmp_path / "jwks.json").read_bytes()
    _JwksHandler.fetches = 0
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _JwksHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/openid/v1/jwks"
        verifier = TokenVerifier(VerifierSettings(), jwks_url=url)
        for user in ("u1", "u2", "u3"):
            assert (await verifier.claims(ISSUER.mint(user, ["user"])))["sub"] == user
        assert _JwksHandler.fetches == 1
    finally:
        server.shutdown()
        server.server_close()
