"""The local stack's token renewer: ``python -m assay_cli.renew STATE_DIR [--ttl SECONDS]``.

It keeps a token file per Assay service in ``STATE_DIR/tokens/`` (``<name>.token``), signed
with ASSAY_SIGNING_KEY_FILE, and writes a new one (atomically: a reader sees the old token or
the new, never half) once two thirds of the old one's lifetime have passed. It is the only
process of the stack, besides the CLI that started it, that reads the private key.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import jwt

from assaylib.access import SERVICE_IDENTITIES
from assaylib.issuer import Issuer

TOKEN_DIR = "tokens"
RENEW_AT = 2 / 3
"""The fraction of a token's lifetime after which it is renewed."""
MAX_NAP = 60.0


def token_path(state_dir: Path, name: str) -> Path:
    """The token file of service ``name`` in a stack's state directory."""
    return state_dir / TOKEN_DIR / f"{name}.token"


def _renew_after(path: Path) -> float:
    """When (epoch seconds) the token in ``path`` is due for renewal; 0 if unreadable."""
    try:
        claims = jwt.decode(path.read_text().strip(), options={"verify_signature": False})
        issued, expires = float(claims["iat"]), float(claims["exp"])
    except (OSError, jwt.PyJWTError, KeyError, TypeError, ValueError):
        return 0.0
    return issued + (expires - issued) * RENEW_AT


def renew_tokens(issuer: Issuer, state_dir: Path, names: Iterable[str], ttl: float) -> float:
    """Write a fresh token for every service whose token is missing or due; return when
    (epoch seconds) the next one falls due."""
    directory = state_dir / TOKEN_DIR
    directory.mkdir(parents=True, exist_ok=True)
    next_due = float("inf")
    for name in names:
        path = token_path(state_dir, name)
        due = _renew_after(path)
        if due <= time.time():
            partial = path.with_name(path.name + ".tmp")
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(issuer.mint_service(name, ttl) + "\n")
            partial.replace(path)
            due = _renew_after(path)
        next_due = min(next_due, due)
    return next_due


def main(argv: list[str] | None = None) -> int:
    """Renew the stack's service tokens until stopped (SIGTERM)."""
    parser = argparse.ArgumentParser(prog="python -m assay_cli.renew")
    parser.add_argument("state_dir", type=Path)
    parser.add_argument("--ttl", type=float, default=3600.0)
    args = parser.parse_args(argv)
    key_file = os.environ.get("ASSAY_SIGNING_KEY_FILE", "")
    if not key_file:
        print("renew: ASSAY_SIGNING_KEY_FILE is not set", file=sys.stderr)
        return 2
    issuer = Issuer.load(key_file)
    while True:
        next_due = renew_tokens(issuer, args.state_dir, SERVICE_IDENTITIES, args.ttl)
        time.sleep(min(MAX_NAP, max(0.05, next_due - time.time())))


if __name__ == "__main__":
    raise SystemExit(main())
