"""The local stack's token renewer: a token per service, renewed once two thirds of its
lifetime have passed, replaced atomically (a new file, so readers see the change)."""

from __future__ import annotations

import time
from pathlib import Path

import jwt

from assay_cli.renew import renew_tokens, token_path
from assaylib.issuer import Issuer

NAMES = ("assessment", "worker", "notifier", "sweep")


def _claims(path: Path) -> dict[str, object]:
    claims: dict[str, object] = jwt.decode(
        path.read_text().strip(), options={"verify_signature": False}
    )
    return claims


def test_every_service_gets_a_token_of_its_own(tmp_path: Path) -> None:
    issuer = Issuer.generate()
    next_due = renew_tokens(issuer, tmp_path, NAMES, ttl=600)
    for name in NAMES:
        claims = _claims(token_path(tmp_path, name))
        assert (claims["sub"], claims["roles"]) == (name, ["service"])
        assert token_path(tmp_path, name).stat().st_mode & 0o077 == 0
    assert time.time() + 350 < next_due <= time.time() + 400  # at two thirds of 600 s


def test_only_a_token_past_two_thirds_of_its_life_is_renewed(tmp_path: Path) -> None:
    issuer = Issuer.generate()
    renew_tokens(issuer, tmp_path, NAMES, ttl=600)
    kept = {name: token_path(tmp_path, name).read_text() for name in NAMES}
    now = int(time.time())
    aging = token_path(tmp_path, "worker")
    aging.write_text(issuer.mint("worker", ["service"], iat=now - 500, exp=now + 100))
    before = aging.stat().st_ino
    renew_tokens(issuer, tmp_path, NAMES, ttl=600)
    assert _claims(aging)["exp"] == _claims(aging)["iat"] + 600  # type: ignore[operator]
    assert aging.stat().st_ino != before  # replaced, not rewritten in place
    for name in ("assessment", "notifier", "sweep"):
        assert token_path(tmp_path, name).read_text() == kept[name]
