"""Bearer-token authentication and authorization (ARCHITECTURE §6): the server interceptor,
the caller's principal, and the client side (a token from a file, re-read when it changes).

Tokens are verified by public keys only (``assaylib.keys``); which identity may call which
RPC is ``assaylib.access.ACCESS``. No service signs tokens: ``assaylib.issuer`` does that, for
the local stack, ``assay token mint`` and tests only.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import prometheus_client

from assaylib import errors
from assaylib._handlers import Context, Guard, GuardingInterceptor
from assaylib.access import ACCESS, AccessTable, identity_of
from assaylib.config import Settings
from assaylib.keys import TokenVerifier, VerifierSettings, roles_in, tier_in

__all__ = [
    "ROLES",
    "RPC_DENIED",
    "AuthInterceptor",
    "BearerTokenInterceptor",
    "Principal",
    "act_as",
    "authorized",
    "bearer_token_interceptors",
    "current_principal",
    "file_token_provider",
    "service_token",
    "stop_acting",
    "verifier_of",
]

ROLES = frozenset({"user", "service", "operator"})
"""Every role Assay reads from a token (others are ignored)."""
AUTHORIZATION = "authorization"
TOKEN_CACHE_SIZE = 10_000
DEFAULT_EXEMPT_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
TOKEN_FILE_CHECK = 1.0
"""Seconds between two looks at a token file for a newer token."""

TokenSource = str | Callable[[], str]

RPC_DENIED = prometheus_client.Counter(
    "assay_rpc_denied",
    "Calls refused with PERMISSION_DENIED, by the caller's identity and the method.",
    ["identity", "method"],
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Principal:
    """The authenticated caller of an RPC: its subject (the token's ``sub``: a user id, or a
    service's name), roles, and identity (a row of ``assaylib.access.ACCESS``)."""

    user_id: str
    roles: frozenset[str]
    expires_at: float = field(default=float("inf"), compare=False)
    """The token's ``exp`` (seconds since the epoch)."""
    identity: str = ""
    """``user``, ``caller``, ``operator``, one of Assay's services, or ``none``; derived from
    the subject and roles when not given."""
    tier: str = field(default="", compare=False)
    """The tier the token names (``ASSAY_JWT_TIER_CLAIM``); empty when it names none."""

    def __post_init__(self) -> None:
        if not self.identity:
            object.__setattr__(self, "identity", identity_of(self.user_id, self.roles))

    @property
    def is_operator(self) -> bool:
        """Whether the caller may act on any user's jobs."""
        return "operator" in self.roles

    @property
    def is_service(self) -> bool:
        """Whether the caller is a service (an internal caller, or one of Assay's own)."""
        return self.identity not in ("user", "operator", "none")

    @property
    def acts_for_anyone(self) -> bool:
        """Whether the caller may act on every user (operators and services)."""
        return self.is_operator or self.is_service

    def can_act_for(self, user_id: str) -> bool:
        """Whether the caller may see and act on ``user_id``'s jobs, results and balance."""
        return self.acts_for_anyone or self.user_id == user_id


def principal_of(
    claims: dict[str, Any],
    roles_claim: str = "roles",
    namespaces: Collection[str] = (),
    tier_claim: str = "tier",
) -> Principal:
    """The principal of verified claims: roles Assay knows, read from ``roles_claim``; a
    service account is one of Assay's services only in ``namespaces`` (any when empty)."""
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise errors.Unauthenticated("token has no subject")
    roles = frozenset(roles_in(claims, roles_claim)) & ROLES
    return Principal(
        user_id=subject,
        roles=roles,
        expires_at=float(claims.get("exp", 0)),
        identity=identity_of(subject, roles, namespaces),
        tier=tier_in(claims, tier_claim),
    )


def _listed(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def verifier_of(settings: Settings) -> TokenVerifier:
    """The token verifier ``settings`` describe (JWKS file or URL, issuers, audience)."""
    issuers = _listed(settings.jwt_issuer)
    return TokenVerifier(
        VerifierSettings(
            issuers=issuers,
            audience=settings.jwt_audience,
            roles_claim=settings.jwt_roles_claim,
            tier_claim=settings.jwt_tier_claim,
            service_namespaces=_listed(settings.service_account_namespace),
        ),
        jwks_file=settings.jwks_file,
        jwks_url=settings.jwks_url,
        refresh=settings.jwks_refresh,
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
    """Requires a valid bearer token on every non-exempt RPC, and that the caller's identity
    may call the method (``access``).

    Bad or missing token → UNAUTHENTICATED; a method outside the identity's row →
    PERMISSION_DENIED naming both, logged and counted in ``assay_rpc_denied_total``;
    otherwise the servicer runs with ``current_principal()`` set.
    """

    def __init__(
        self,
        verifier: TokenVerifier,
        access: AccessTable = ACCESS,
        exempt_prefixes: Sequence[str] = DEFAULT_EXEMPT_PREFIXES,
    ) -> None:
        self._verifier = verifier
        self._access = access
        self._exempt_prefixes = tuple(exempt_prefixes)
        self._verified_tokens: dict[str, tuple[Principal, float]] = {}
        self._generation = verifier.generation

    async def _verified(self, token: str) -> Principal:
        """A token's principal, remembered until it expires or the key set changes: a caller
        reuses its token for many calls, and a signature check costs more than the rest of a
        call's authentication. A bad token is never remembered."""
        self._forget_if_keys_changed()
        known = self._verified_tokens.get(token)
        if known is not None and known[1] > time.time() and not self._verifier.due():
            return known[0]
        claims = await self._verifier.claims(token)
        verified = self._verifier.settings
        principal = principal_of(
            claims, verified.roles_claim, verified.service_namespaces, verified.tier_claim
        )
        self._forget_if_keys_changed()  # verifying may have re-read the key set
        if len(self._verified_tokens) >= TOKEN_CACHE_SIZE:
            self._verified_tokens.clear()  # simple and bounded; refilled by the next calls
        self._verified_tokens[token] = (principal, principal.expires_at)
        return principal

    def _forget_if_keys_changed(self) -> None:
        """A token remembered under a key that is gone must be checked again."""
        if self._generation != self._verifier.generation:
            self._verified_tokens.clear()
            self._generation = self._verifier.generation

    async def authenticate(
        self, metadata: Iterable[tuple[str, str | bytes]] | None, method: str
    ) -> Principal:
        """The principal of a call's metadata; raises Unauthenticated or PermissionDenied."""
        principal = await self._verified(bearer_token(metadata))
        if not self._access.allows(principal.identity, method):
            name = method.lstrip("/")
            RPC_DENIED.labels(principal.identity, name).inc()
            log.warning(
                "permission denied: identity %s (sub %s) may not call %s",
                principal.identity,
                principal.user_id,
                name,
            )
            raise errors.PermissionDenied(f"identity {principal.identity!r} may not call {name}")
        return principal

    def guard_for(self, details: grpc.HandlerCallDetails) -> Guard | None:
        """Authenticate every call of a non-exempt method, inside the call."""
        if self.exempts(details.method):
            return None
        method = details.method

        @asynccontextmanager
        async def guard(context: Context, request: Any) -> AsyncIterator[None]:
            async with self._principal_guard(context, method):
                yield

        return guard

    def exempts(self, method: str) -> bool:
        """Whether ``method``'s calls need no token (health, reflection)."""
        return method.startswith(self._exempt_prefixes)

    async def caller_of(self, context: Context, method: str) -> Principal:
        """The principal of the call being served; a refused call is aborted with its
        status (UNAUTHENTICATED or PERMISSION_DENIED)."""
        try:
            return await self.authenticate(context.invocation_metadata(), method)
        except errors.AssayError as err:
            await context.abort_with_status(err.to_status())

    @asynccontextmanager
    async def _principal_guard(self, context: Context, method: str) -> AsyncIterator[None]:
        token = act_as(await self.caller_of(context, method))
        try:
            yield
        finally:
            stop_acting(token)


def act_as(principal: Principal) -> contextvars.Token[Principal | None]:
    """Make ``principal`` the caller ``current_principal()`` returns, until ``stop_acting``."""
    return _current.set(principal)


def stop_acting(token: contextvars.Token[Principal | None]) -> None:
    """Undo ``act_as``."""
    # A stream closed from another context cannot reset; its task ends anyway.
    with contextlib.suppress(ValueError):
        _current.reset(token)


# ---- client side -------------------------------------------------------------------------


def authorized(
    metadata: Iterable[tuple[str, str | bytes]] | None, token: TokenSource
) -> tuple[tuple[str, str | bytes], ...]:
    """A call's ``metadata`` with ``authorization: Bearer <token>`` in place of any it had
    (``token`` may be a callable, asked on every call)."""
    value = token() if callable(token) else token
    kept = tuple((k, v) for k, v in (metadata or ()) if k.lower() != AUTHORIZATION)
    return (*kept, (AUTHORIZATION, f"Bearer {value}"))


def _with_authorization(
    details: grpc.aio.ClientCallDetails, token: TokenSource
) -> grpc.aio.ClientCallDetails:
    metadata = grpc.aio.Metadata(*authorized(details.metadata, token))
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


class _TokenFile:
    """A token kept in a file that another party renews (the kubelet's projected token, the
    local stack's issuer): re-read when the file changes, looked at once a second at most."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._token = ""
        self._stamp: tuple[int, int, int] | None = None
        self._checked_at = float("-inf")

    def __call__(self) -> str:
        with self._lock:
            now = time.monotonic()
            if now - self._checked_at >= TOKEN_FILE_CHECK or not self._token:
                self._checked_at = now
                self._reload()
            return self._token

    def _reload(self) -> None:
        try:
            status = os.stat(self._path)  # follows the kubelet's ..data symlink swap
            stamp = (status.st_ino, status.st_mtime_ns, status.st_size)
            if stamp != self._stamp:
                self._token = self._path.read_text().strip()
                self._stamp = stamp
        except OSError as err:
            if not self._token:
                raise errors.Unauthenticated(f"cannot read the service token: {err}") from None
            log.warning(
                "cannot re-read the service token %s (%s); keeping the last", self._path, err
            )


def file_token_provider(path: str | Path) -> Callable[[], str]:
    """A callable returning the token in ``path``, re-read whenever the file changes."""
    return _TokenFile(Path(path))


def service_token(settings: Settings, name: str) -> Callable[[], str]:
    """The token Assay's service ``name`` presents: ``ASSAY_SERVICE_TOKEN_FILE`` (a ``{name}``
    in it is replaced by ``name``, so processes of one stack can share the setting)."""
    if not settings.service_token_file:
        raise ValueError("ASSAY_SERVICE_TOKEN_FILE is not set: the service has no token")
    return file_token_provider(settings.service_token_file.replace("{name}", name))
