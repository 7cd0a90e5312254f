"""The runner as token issuer: what Kubernetes' service-account issuer would be.

Pods that mount a projected ``serviceAccountToken`` get, in its place, a file holding a JWT
this module signs with a key pair made per run; the JWKS ConfigMap the servers mount
(``assay-jwks``) is replaced by this key pair's public half, and the CLI's user and operator
tokens are signed by the same key (standing in for the organisation's identity provider).
Adapt ``service_account_token`` when the issuer's claims change.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

KEY_ID = f"podkube-{uuid.uuid4().hex[:8]}"


@dataclass
class Issuer:
    """A per-run EC P-256 key pair standing in for the cluster's service-account issuer
    (and for the organisation's identity provider, for the CLI's user and operator)."""

    issuer: str = "assay"
    key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )

    def jwks(self) -> str:
        """The JWKS document holding the public half (the ``assay-jwks`` ConfigMap's key)."""
        public: dict[str, Any] = json.loads(ECAlgorithm.to_jwk(self.key.public_key()))
        public.update(kid=KEY_ID, use="sig", alg="ES256")
        return json.dumps({"keys": [public]})

    def sign(self, claims: dict[str, Any]) -> str:
        """ES256 with this run's key."""
        return jwt.encode(claims, self.key, algorithm="ES256", headers={"kid": KEY_ID})

    def service_account_token(
        self, namespace: str, service_account: str, audience: str, expiration: int
    ) -> str:
        """The projected serviceAccountToken a kubelet would write for a pod running as
        ``service_account``: ``sub`` system:serviceaccount:<namespace>:<service_account>."""
        now = int(time.time())
        return self.sign(
            {
                "iss": self.issuer,
                "aud": [audience],
                "sub": f"system:serviceaccount:{namespace}:{service_account}",
                "iat": now,
                "nbf": now,
                "exp": now + expiration,
                "kubernetes.io": {
                    "namespace": namespace,
                    "serviceaccount": {"name": service_account},
                },
            }
        )

    def caller_token(self, user_id: str, roles: Iterable[str], ttl: int = 3600) -> str:
        """A token for the CLI (a user, an operator), signed by this run's key."""
        now = int(time.time())
        claims = {"iss": self.issuer, "aud": "assay", "sub": user_id, "roles": sorted(roles)}
        return self.sign({**claims, "iat": now, "exp": now + ttl})
