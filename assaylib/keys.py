"""Bearer-token verification by public keys only (ARCHITECTURE §6).

Keys come from a JWKS: a file (``ASSAY_JWKS_FILE``, e.g. a ConfigMap holding the cluster's
``/openid/v1/jwks``) or a URL (``ASSAY_JWKS_URL``, an identity provider's ``jwks_uri``). The
set is re-read every ``jwks_refresh`` seconds and at once when a token names a ``kid`` it does
not hold (at most once per ``UNKNOWN_KID_INTERVAL``), so a new key is trusted as soon as it is
published and a removed key's tokens are refused after the next refresh.

Only asymmetric algorithms are accepted, and each key only with its own algorithm: HS256,
``none`` and algorithm confusion (an HS256 token keyed with a public key's bytes) never verify.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from assaylib import errors

__all__ = [
    "ALGORITHMS",
    "KeySet",
    "TokenVerifier",
    "VerifierSettings",
    "load_jwks",
    "roles_in",
    "tier_in",
]

ALGORITHMS = frozenset({"ES256", "EdDSA", "RS256"})
"""The only algorithms a token may be signed with."""
UNKNOWN_KID_INTERVAL = 1.0
"""Seconds between two re-reads of the key set caused by unknown ``kid``s."""
FETCH_TIMEOUT = 10.0

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VerifierSettings:
    """What a token must satisfy besides its signature."""

    issuers: tuple[str, ...] = ("assay",)
    """Accepted ``iss`` values (the org's identity provider, the cluster, the local stack)."""
    audience: str = "assay"
    """The ``aud`` every token must name."""
    roles_claim: str = "roles"
    """The claim holding the roles (a dotted path such as ``realm_access.roles`` reaches into
    nested objects); a list of strings or one space-separated string."""
    tier_claim: str = "tier"
    """The claim holding a user's tier (a dotted path); a string, else ignored."""
    service_namespaces: tuple[str, ...] = ()
    """Namespaces whose ``assay-<name>`` service accounts are Assay's services (any when
    empty)."""
    leeway: float = 0.0
    """Seconds of clock skew tolerated on ``exp``/``nbf``/``iat``."""


@dataclass(frozen=True)
class KeySet:
    """The usable public keys of one JWKS read, by ``kid``."""

    keys: Mapping[str, jwt.PyJWK]

    @classmethod
    def parse(cls, document: Mapping[str, Any]) -> KeySet:
        """The keys of a JWKS document; keys without ``kid``, private keys, symmetric keys and
        keys of other algorithms are skipped (with a warning)."""
        entries = document.get("keys") if isinstance(document, Mapping) else None
        if not isinstance(entries, list):
            raise ValueError("a JWKS must be an object with a 'keys' list")
        keys: dict[str, jwt.PyJWK] = {}
        for entry in entries:
            key = _usable_key(entry)
            if key is not None:
                keys[str(entry["kid"])] = key
        return cls(keys)


def _usable_key(entry: Any) -> jwt.PyJWK | None:
    if not isinstance(entry, dict) or not isinstance(entry.get("kid"), str):
        log.warning("JWKS entry without a kid skipped")
        return None
    kid = entry["kid"]
    if entry.get("kty") == "oct" or "d" in entry:
        log.warning("JWKS key %s skipped: only public keys are used", kid)
        return None
    if entry.get("use", "sig") != "sig":
        return None
    try:
        key = jwt.PyJWK(entry)
    except jwt.PyJWTError as err:
        log.warning("JWKS key %s skipped: %s", kid, err)
        return None
    if key.algorithm_name not in ALGORITHMS:
        log.warning("JWKS key %s skipped: algorithm %s is not accepted", kid, key.algorithm_name)
        return None
    return key


def load_jwks(file: str = "", url: str = "") -> KeySet:
    """Read the key set from ``file``, else fetch it from ``url`` (blocking)."""
    if file:
        return KeySet.parse(json.loads(Path(file).read_text()))
    if not url:
        raise ValueError("no JWKS: set ASSAY_JWKS_FILE or ASSAY_JWKS_URL")
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=FETCH_TIMEOUT) as reply:
        return KeySet.parse(json.loads(reply.read()))


class TokenVerifier:
    """Verifies bearer tokens against a JWKS that it keeps fresh.

    ``claims`` is a coroutine: reading the key set (a file, or a URL fetched in a thread)
    never blocks the event loop, and concurrent calls that find it due read it once.
    """

    def __init__(
        self,
        settings: VerifierSettings,
        *,
        jwks_file: str = "",
        jwks_url: str = "",
        refresh: float = 300.0,
    ) -> None:
        if not (jwks_file or jwks_url):
            raise ValueError("no JWKS: set ASSAY_JWKS_FILE or ASSAY_JWKS_URL")
        self.settings = settings
        self._file = jwks_file
        self._url = jwks_url
        self._refresh = refresh
        self._keys = KeySet({})
        self._loaded_at = float("-inf")
        self._unknown_kid_at = float("-inf")
        self._lock = asyncio.Lock()
        self.generation = 0
        """Counts the key set's changes (a cache of verified tokens keys on it)."""

    @property
    def kids(self) -> frozenset[str]:
        """The ``kid``s currently trusted."""
        return frozenset(self._keys.keys)

    async def refresh(self, *, only_if_due: bool = False) -> None:
        """Re-read the key set now (``only_if_due``: unless another call just did); on
        failure keep the last one (and log why)."""
        async with self._lock:
            if not only_if_due or self.due():
                await self._reload()

    async def _reload(self) -> None:
        try:
            keys = await asyncio.to_thread(load_jwks, self._file, self._url)
        except (OSError, ValueError) as err:
            log.warning("cannot read the JWKS (%s); keeping the %d keys held", err, len(self.kids))
            self._loaded_at = time.monotonic()
            return
        if set(keys.keys) != set(self._keys.keys):
            log.info("JWKS now holds keys %s", sorted(keys.keys))
            self.generation += 1
        elif any(keys.keys[kid].key != self._keys.keys[kid].key for kid in keys.keys):
            self.generation += 1
        self._keys = keys
        self._loaded_at = time.monotonic()

    async def _key_for(self, kid: str) -> jwt.PyJWK:
        if self.due():
            await self.refresh(only_if_due=True)
        key = self._keys.keys.get(kid)
        if key is None and time.monotonic() - self._unknown_kid_at >= UNKNOWN_KID_INTERVAL:
            self._unknown_kid_at = time.monotonic()
            await self.refresh()
            key = self._keys.keys.get(kid)
        if key is None:
            raise errors.Unauthenticated(f"token key {kid!r} is not in the JWKS")
        return key

    def due(self) -> bool:
        """Whether the periodic refresh is due (a cache of verified tokens re-checks then)."""
        return time.monotonic() - self._loaded_at >= self._refresh

    async def claims(self, token: str) -> dict[str, Any]:
        """The verified claims of ``token``; raises errors.Unauthenticated saying what is wrong."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise errors.Unauthenticated("malformed token") from None
        algorithm = header.get("alg")
        if algorithm not in ALGORITHMS:
            raise errors.Unauthenticated(
                f"token algorithm {algorithm!r} is refused (accepted: {sorted(ALGORITHMS)})"
            )
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise errors.Unauthenticated("token header has no kid")
        key = await self._key_for(kid)
        if key.algorithm_name != algorithm:
            raise errors.Unauthenticated(
                f"token algorithm {algorithm} does not match key {kid!r} ({key.algorithm_name})"
            )
        return _decode(token, key, self.settings)


def _decode(token: str, key: jwt.PyJWK, settings: VerifierSettings) -> dict[str, Any]:
    issuers: Sequence[str] = settings.issuers
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key.key,
            algorithms=[key.algorithm_name],
            audience=settings.audience,
            issuer=issuers,
            leeway=settings.leeway,
            options={"require": ["exp", "iss", "aud", "sub"]},
        )
    except jwt.ExpiredSignatureError:
        raise errors.Unauthenticated("token expired") from None
    except jwt.InvalidSignatureError:
        raise errors.Unauthenticated("token signature is invalid") from None
    except jwt.InvalidAudienceError:
        raise errors.Unauthenticated(f"token audience is not {settings.audience!r}") from None
    except jwt.InvalidIssuerError:
        raise errors.Unauthenticated(f"token issuer is not one of {list(issuers)}") from None
    except jwt.MissingRequiredClaimError as err:
        raise errors.Unauthenticated(f"token has no {err.claim!r} claim") from None
    except jwt.PyJWTError as err:
        raise errors.Unauthenticated(f"malformed token: {type(err).__name__}") from None
    return claims


def tier_in(claims: Mapping[str, Any], claim: str) -> str:
    """The tier under ``claim`` (a dotted path); empty when absent or not a string."""
    value: Any = claims
    for part in claim.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value.strip() if isinstance(value, str) else ""


def roles_in(claims: Mapping[str, Any], claim: str) -> list[str]:
    """The roles under ``claim`` (a dotted path); none when absent. A list of strings or one
    space-separated string; anything else is UNAUTHENTICATED."""
    value: Any = claims
    for part in claim.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    if value is None:
        return []
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list) and all(isinstance(role, str) for role in value):
        return list(value)
    raise errors.Unauthenticated(f"token claim {claim!r} must be a list of strings")
