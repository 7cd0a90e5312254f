"""Bearer-token authentication (ARCHITECTURE §6): JWT minting, verification, interceptors."""

from __future__ import annotations

import contextlib
import contextvars
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio
import jwt

from assaylib import errors
from assaylib._handlers import Context, Guard, GuardingInterceptor
from assaylib.config import MIN_SECRET_BYTES

__all__ = [
    "AUDIENCE",
    "ISSUER",
    "ROLES",
    "AuthInterceptor",
    "BearerTokenInterceptor",
    "Principal",
    "bearer_token_interceptors",
    "current_principal",
    "mint_token",
    "service_token_provider",
    "verify_token",
]

ROLES = frozenset({"user", "service", "operator"})
"""Every role a token may carry."""
ISSUER = "assay"
AUDIENCE = "assay"
ALGORITHM = "HS256"
AUTHORIZATION = "authorization"
TOKEN_CACHE_SIZE = 10_000
DEFAULT_EXEMPT_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")

TokenSource = str | Callable[[], str]


@dataclass(frozen=True)
class Principal:
    """The authenticated caller of an RPC: its user id (the token's ``sub``) and roles."""

    user_id: str
    roles: frozenset[str]
    expires_at: float = field(default=float("inf"), compare=False)
    """The token's ``exp`` (seconds since the epoch)."""

    @property
    def is_operator(self) -> bool:
        """Whether the caller may act on any user's jobs."""
        return "operator" in self.roles

    @property
    def is_service(self) -> bool:
        """Whether the caller is another Assay service."""
        return "service" in self.roles

    @property
    def acts_for_anyone(self) -> bool:
        """Whether the caller may act on every user (operators, and Assay's own services)."""
        return self.is_operator or self.is_service

    def can_act_for(self, user_id: str) -> bool:
        """Whether the caller may see and act on ``user_id``'s jobs, results and balance."""
        return self.acts_for_anyone or self.user_id == user_id


def check_secret(secret: str) -> None:
    """Raise ValueError unless ``secret`` is long enough for HS256 (32 bytes)."""
    if len(secret.encode()) < MIN_SECRET_BYTES:
        raise ValueError(f"the JWT secret must be at least {MIN_SECRET_BYTES} bytes long")


def mint_token(secret: str, user_id: str, roles: Iterable[str], ttl: float = 3600.0) -> str:
    """Sign an HS256 token for ``user_id`` with ``roles`` that expires after ``ttl`` seconds.

    Raises ValueError for an unknown role, an empty user id or a secret under 32 bytes.
    """
    check_secret(secret)
    role_list = sorted(set(roles))
    unknown = set(role_list) - ROLES
    if unknown:
        raise ValueError(f"unknown roles {sorted(unknown)}; expected a subset of {sorted(ROLES)}")
    if not user_id:
        raise ValueError("user_id must not be empty")
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": user_id,
        "roles": role_list,
        "iat": now,
        "exp": now + max(1, round(ttl)),
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify_token(secret: str, token: str) -> Principal:
    """Check a token's signature, expiry, issuer, audience and roles; return its principal.

    Raises errors.Unauthenticated saying what is wrong (ValueError for a too-short secret).
    """
    check_secret(secret)
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            audience=AUDIENCE,
            issuer=ISSUER,
            options={"require": ["exp", "iss", "aud", "sub"]},
        )
    except jwt.ExpiredSignatureError:
        raise errors.Unauthenticated("token expired") from None
    except jwt.InvalidSignatureError:
        raise errors.Unauthenticated("token signature is invalid") from None
    except jwt.InvalidAudienceError:
        raise errors.Unauthenticated(f"token audience is not {AUDIENCE!r}") from None
    except jwt.InvalidIssuerError:
        raise errors.Unauthenticated(f"token issuer is not {ISSUER!r}") from None
    except jwt.MissingRequiredClaimError as err:
        raise errors.Unauthenticated(f"token has no {err.claim!r} claim") from None
    except jwt.InvalidTokenError as err:
        raise errors.Unauthenticated(f"malformed token: {type(err).__name__}") from None
    return _principal_from_claims(claims)


def _principal_from_claims(claims: dict[str, Any]) -> Principal:
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise errors.Unauthenticated("token has no subject")
    roles = claims.get("roles")
    if not isinstance(roles, list) or not all(isinstance(role, str) for role in roles):
        raise errors.Unauthenticated("token roles must be a list of strings")
    unknown = set(roles) - ROLES
    if unknown:
        raise errors.Unauthenticated(f"token has unknown roles {sorted(unknown)}")
    return Principal(
        user_id=subject, roles=frozenset(roles), expires_at=float(claims.get("exp", 0))
    )


_current: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "assay_principal", default=None
)


def current_principal() -> Principal:
    """The caller of the RPC being served; raises errors.Unauthenticated outside one."""
    principal = _current.get()
    if principal is None:
        raise errors.Unauthenticated("no authenticated caller")
    return principal


def bearer_token(metadata: Iterable[tuple[str, str | bytes]] | None) -> str:
    """The token in an ``authorization: Bearer <jwt>`` metadata entry."""
    for key, value in metadata or ():
        if key.lower() != AUTHORIZATION:
            continue
        text = value.decode("latin-1") if isinstance(value, bytes) else value
        scheme, _, token = text.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise errors.Unauthenticated("authorization metadata must be 'Bearer <token>'")
        return token.strip()
    raise errors.Unauthenticated("missing authorization metadata ('Bearer <token>')")


class AuthInterceptor(GuardingInterceptor):
    """Requires a valid bearer token with one of ``allowed_roles`` on every non-exempt RPC.

    Bad or missing token → UNAUTHENTICATED; a role not allowed → PERMISSION_DENIED; otherwise
    the servicer runs with ``current_principal()`` set.
    """

    def __init__(
        self,
        secret: str,
        allowed_roles: Iterable[str],
        exempt_prefixes: Sequence[str] = DEFAULT_EXEMPT_PREFIXES,
    ) -> None:
        check_secret(secret)
        self._secret = secret
        self._allowed_roles = frozenset(allowed_roles)
        self._exempt_prefixes = tuple(exempt_prefixes)
        self._verified_tokens: dict[str, tuple[Principal, float]] = {}

    def _verified(self, token: str) -> Principal:
        """verify_token, remembered until the token expires: a caller reuses its token for
        many calls, and checking an HS256 signature costs more than the rest of a call's
        authentication. A bad token is never remembered."""
        known = self._verified_tokens.get(token)
        if known is not None and known[1] > time.time():
            return known[0]
        principal = verify_token(self._secret, token)
        if len(self._verified_tokens) >= TOKEN_CACHE_SIZE:
            self._verified_tokens.clear()  # simple and bounded; refilled by the next calls
        self._verified_tokens[token] = (principal, principal.expires_at)
        return principal

    def authenticate(self, metadata: Iterable[tuple[str, str | bytes]] | None) -> Principal:
        """The principal of a call's metadata; raises Unauthenticated or PermissionDenied."""
        principal = self._verified(bearer_token(metadata))
        if not principal.roles & self._allowed_roles:
            raise errors.PermissionDenied(
                f"roles {sorted(principal.roles)} may not call this service "
                f"(needs one of {sorted(self._allowed_roles)})"
            )
        return principal

    def guard_for(self, details: grpc.HandlerCallDetails) -> Guard | None:
        """Authenticate every call of a non-exempt method, inside the call."""
        if details.method.startswith(self._exempt_prefixes):
            return None
        return self._principal_guard

    @asynccontextmanager
    async def _principal_guard(self, context: Context, request: Any) -> AsyncIterator[None]:
        try:
            principal = self.authenticate(context.invocation_metadata())
        except errors.AssayError as err:
            await context.abort_with_status(err.to_status())
        token = _current.set(principal)
        try:
            yield
        finally:
            # A stream closed from another context cannot reset; its task ends anyway.
            with contextlib.suppress(ValueError):
                _current.reset(token)


# ---- client side -------------------------------------------------------------------------


def _with_authorization(
    details: grpc.aio.ClientCallDetails, token: TokenSource
) -> grpc.aio.ClientCallDetails:
    value = token() if callable(token) else token
    metadata = grpc.aio.Metadata(
        *[(k, v) for k, v in (details.metadata or ()) if k.lower() != AUTHORIZATION]
    )
    metadata.add(AUTHORIZATION, f"Bearer {value}")
    return grpc.aio.ClientCallDetails(
        details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
    )


class _Bearer:
    """Adds ``authorization: Bearer <token>`` to a call; ``token`` may be a callable."""

    def __init__(self, token: TokenSource) -> None:
        self._token = token

    async def _intercept(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Any],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        return await continuation(_with_authorization(client_call_details, self._token), request)


# grpc.aio files an interceptor under one call kind only (its first base), so each kind has
# its own class; they share the one body above.
class BearerTokenInterceptor(_Bearer, grpc.aio.UnaryUnaryClientInterceptor):
    """The bearer token on unary calls (``bearer_token_interceptors`` covers every kind)."""

    intercept_unary_unary = _Bearer._intercept


class _BearerUnaryStream(_Bearer, grpc.aio.UnaryStreamClientInterceptor):
    intercept_unary_stream = _Bearer._intercept


class _BearerStreamUnary(_Bearer, grpc.aio.StreamUnaryClientInterceptor):
    intercept_stream_unary = _Bearer._intercept  # type: ignore[assignment]


class _BearerStreamStream(_Bearer, grpc.aio.StreamStreamClientInterceptor):
    intercept_stream_stream = _Bearer._intercept  # type: ignore[assignment]


def bearer_token_interceptors(token: TokenSource) -> list[grpc.aio.ClientInterceptor]:
    """One bearer-token interceptor per call kind, for ``grpc.aio.*_channel(interceptors=)``."""
    return [
        BearerTokenInterceptor(token),
        _BearerUnaryStream(token),
        _BearerStreamUnary(token),
        _BearerStreamStream(token),
    ]


def service_token_provider(
    secret: str, name: str, *, ttl: float = 3600.0, refresh_before: float = 300.0
) -> Callable[[], str]:
    """A callable returning a ``service``-role token for ``name``, re-minted near expiry."""
    lock = threading.Lock()
    state: dict[str, Any] = {"token": "", "renew_at": 0.0}
    margin = min(refresh_before, ttl / 2)

    def provide() -> str:
        with lock:
            now = time.monotonic()
            if now >= state["renew_at"]:
                state["token"] = mint_token(secret, name, ["service"], ttl)
                state["renew_at"] = now + ttl - margin
            return str(state["token"])

    return provide
