"""A token issuer: a private key that signs tokens, and its public JWKS.

Only the local stack (``assay dev up``, the end-to-end tests), ``assay token mint`` and the
tests use it; no Assay service imports it or is ever given the private key. In a cluster the
issuers are Kubernetes (service-account tokens) and the organisation's identity provider.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

__all__ = ["DEFAULT_ISSUER", "Issuer", "write_jwks"]

DEFAULT_ISSUER = "assay"
"""The ``iss`` of the local stack's tokens (``ASSAY_JWT_ISSUER``'s default)."""
PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey
_ALGORITHM = {"ES256": ec.EllipticCurvePrivateKey, "EdDSA": ed25519.Ed25519PrivateKey}


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _algorithm_of(key: PrivateKey) -> str:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if key.curve.name != "secp256r1":
            raise ValueError(f"EC keys must be P-256 (ES256), not {key.curve.name}")
        return "ES256"
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "EdDSA"
    return "RS256"


def _public_jwk(key: PrivateKey) -> dict[str, str]:
    public = key.public_key()
    if isinstance(public, ec.EllipticCurvePublicKey):
        point = public.public_numbers()
        return {
            "kty": "EC",
            "crv": "P-256",
            "x": _b64(point.x.to_bytes(32, "big")),
            "y": _b64(point.y.to_bytes(32, "big")),
        }
    if isinstance(public, ed25519.Ed25519PublicKey):
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return {"kty": "OKP", "crv": "Ed25519", "x": _b64(raw)}
    numbers = public.public_numbers()
    length = (numbers.n.bit_length() + 7) // 8
    return {
        "kty": "RSA",
        "n": _b64(numbers.n.to_bytes(length, "big")),
        "e": _b64(numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big")),
    }


def _thumbprint(jwk: Mapping[str, str]) -> str:
    """RFC 7638: the SHA-256 of the key's required members, as the ``kid``."""
    required = {
        "EC": ("crv", "kty", "x", "y"),
        "OKP": ("crv", "kty", "x"),
        "RSA": ("e", "kty", "n"),
    }
    members = {name: jwk[name] for name in required[jwk["kty"]]}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
    return _b64(hashlib.sha256(canonical).digest())


@dataclass(frozen=True)
class Issuer:
    """Signs tokens with one private key; ``public_jwk`` is what verifiers trust."""

    key: PrivateKey
    issuer: str = DEFAULT_ISSUER
    audience: str = "assay"

    @classmethod
    def generate(cls, algorithm: str = "ES256", **options: str) -> Issuer:
        """A new key pair for ``algorithm`` (ES256, EdDSA or RS256)."""
        key: PrivateKey
        if algorithm == "ES256":
            key = ec.generate_private_key(ec.SECP256R1())
        elif algorithm == "EdDSA":
            key = ed25519.Ed25519PrivateKey.generate()
        elif algorithm == "RS256":
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        else:
            raise ValueError(f"unsupported algorithm {algorithm!r}")
        return cls(key, **options)

    @classmethod
    def load(cls, path: str | Path, **options: str) -> Issuer:
        """The issuer whose PEM private key is in ``path``."""
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
        if not isinstance(
            key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey
        ):
            raise ValueError(f"{path}: not an EC P-256, Ed25519 or RSA private key")
        return cls(key, **options)

    def save(self, path: str | Path) -> None:
        """Write the private key as PEM, readable by its owner only."""
        pem = self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(pem)

    @property
    def algorithm(self) -> str:
        """The JWS algorithm of the key."""
        return _algorithm_of(self.key)

    @property
    def public_jwk(self) -> dict[str, str]:
        """The public key as a JWK, with ``kid`` (its thumbprint), ``alg`` and ``use``."""
        jwk = _public_jwk(self.key)
        return {**jwk, "kid": _thumbprint(jwk), "alg": self.algorithm, "use": "sig"}

    @property
    def kid(self) -> str:
        """The key's id in the JWKS and in every token's header."""
        return self.public_jwk["kid"]

    def mint(
        self,
        subject: str,
        roles: Iterable[str] = (),
        ttl: float = 3600.0,
        **claims: Any,
    ) -> str:
        """A token for ``subject`` with ``roles`` that expires after ``ttl`` seconds."""
        if not subject:
            raise ValueError("the subject must not be empty")
        now = int(time.time())
        body: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": subject,
            "iat": now,
            "exp": now + max(1, round(ttl)),
        }
        role_list = sorted(set(roles))
        if role_list:
            body["roles"] = role_list
        body.update(claims)
        return jwt.encode(body, self.key, algorithm=self.algorithm, headers={"kid": self.kid})

    def mint_service(self, name: str, ttl: float = 3600.0) -> str:
        """The token of Assay's service ``name`` (``sub`` ``name``, role ``service``)."""
        return self.mint(name, ["service"], ttl)


def write_jwks(path: str | Path, issuers: Iterable[Issuer]) -> None:
    """Publish the public keys of ``issuers`` as a JWKS file (replaced atomically)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    document = {"keys": [issuer.public_jwk for issuer in issuers]}
    partial = target.with_name(target.name + ".tmp")
    partial.write_text(json.dumps(document, indent=2) + "\n")
    partial.replace(target)
