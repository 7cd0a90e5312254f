"""Keyset pagination: page sizes and opaque, tamper-evident page tokens.

A page token holds the keyset position after which the next page starts, with an HMAC over
the position and the query it belongs to. A token that was altered, or taken from another
query (another user, another status filter) is INVALID_ARGUMENT on ``page_token``; its
content never reaches SQL unchecked. The key is not a secret (no service holds one): a page
token grants nothing, since every page is still filtered by its query's owner, so one forged
by someone who read this code only starts a listing they may run anyway at another row.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import json
import uuid
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from assaylib import validation as v
from assaylib.errors import FieldViolation, InvalidArgument

R = TypeVar("R")
DEFAULT_PAGE_SIZE = 50
MAC_BYTES = 16
KEY_LABEL = b"assay page tokens v1"


def page_limit(page_size: int) -> int:
    """The number of rows a page holds."""
    v.require_valid(v.page_size_violations(page_size))
    return page_size or DEFAULT_PAGE_SIZE


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _plain(value: Any) -> str | int:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return value if isinstance(value, int) else str(value)


class PageTokens:
    """Checks page tokens: their integrity and the query they belong to."""

    def __init__(self, key: str = "") -> None:
        self._key = hmac.new(key.encode(), KEY_LABEL, hashlib.sha256).digest()

    def _mac(self, scope: str, payload: bytes) -> bytes:
        signed = scope.encode() + b"\0" + payload
        return hmac.new(self._key, signed, hashlib.sha256).digest()[:MAC_BYTES]

    def encode(self, scope: str, *parts: Any) -> str:
        """The token for the keyset position ``parts`` of the query named by ``scope``."""
        payload = json.dumps([_plain(p) for p in parts], separators=(",", ":")).encode()
        return f"{_b64(payload)}.{_b64(self._mac(scope, payload))}"

    def page(
        self,
        rows: Sequence[R],
        limit: int,
        scope: str,
        position: Callable[[R], tuple[Any, ...]],
    ) -> tuple[Sequence[R], str]:
        """The page out of ``limit + 1`` rows fetched, and the token of the next page ("" when
        this is the last): the position of the page's last row."""
        if len(rows) <= limit:
            return rows, ""
        return rows[:limit], self.encode(scope, *position(rows[limit - 1]))

    def decode(self, token: str, scope: str, kinds: Sequence[type]) -> tuple[Any, ...] | None:
        """The keyset position in ``token`` (None for the first page), each part converted
        to its kind; INVALID_ARGUMENT unless this API signed it for this very query."""
        if not token:
            return None
        try:
            payload_text, mac_text = token.split(".")
            payload, mac = _unb64(payload_text), _unb64(mac_text)
            if not hmac.compare_digest(mac, self._mac(scope, payload)):
                raise ValueError("bad signature")
            parts = json.loads(payload)
            return tuple(_convert(p, kind) for p, kind in zip(parts, kinds, strict=True))
        except (ValueError, TypeError, OverflowError, binascii.Error, UnicodeError):
            raise InvalidArgument(
                [FieldViolation("page_token", "not a page token this query handed out")]
            ) from None


def _convert(part: Any, kind: type) -> Any:
    if kind is dt.datetime and isinstance(part, str):
        return dt.datetime.fromisoformat(part)
    if kind is uuid.UUID and isinstance(part, str):
        return uuid.UUID(part)
    if kind is int and isinstance(part, int) and not isinstance(part, bool):
        return part
    raise TypeError(f"a page token part is not a {kind.__name__}")
