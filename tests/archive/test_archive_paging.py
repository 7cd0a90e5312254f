"""Page tokens are opaque and tamper-evident: only a token this API signed for the very same
query is accepted; anything else is INVALID_ARGUMENT on page_token, never reaching SQL."""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid

import pytest

from archive_svc.paging import PageTokens
from assaylib.errors import InvalidArgument

KINDS = (dt.datetime, uuid.UUID)
POSITION = (dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC), uuid.uuid4())


def refused(tokens: PageTokens, token: str, scope: str = "jobs\0alice") -> None:
    with pytest.raises(InvalidArgument) as caught:
        tokens.decode(token, scope, KINDS)
    assert [v.field for v in caught.value.violations] == ["page_token"]


def test_a_token_round_trips_for_its_own_query() -> None:
    tokens = PageTokens("secret-" * 6)
    token = tokens.encode("jobs\0alice", *POSITION)
    assert tokens.decode(token, "jobs\0alice", KINDS) == POSITION
    assert tokens.decode("", "jobs\0alice", KINDS) is None


def test_a_token_for_another_query_or_key_is_refused() -> None:
    tokens = PageTokens("secret-" * 6)
    token = tokens.encode("jobs\0alice", *POSITION)
    refused(tokens, token, "jobs\0bob")
    refused(PageTokens("another-" * 6), token)


@pytest.mark.parametrize(
    "parts",
    [
        ["2024-01-01T00:00:00+00:00", 5],
        ["0001-01-01T00:00:00+14:00", str(uuid.uuid4())],
        [],
        [None, None],
    ],
)
def test_forged_and_altered_tokens_are_refused(parts: list[object]) -> None:
    tokens = PageTokens("secret-" * 6)
    payload = base64.urlsafe_b64encode(json.dumps(parts).encode()).decode()
    refused(tokens, payload)  # unsigned, the old format
    genuine = tokens.encode("jobs\0alice", *POSITION)
    refused(tokens, f"{payload.rstrip('=')}.{genuine.split('.')[1]}")  # another's signature
    refused(tokens, genuine[:-2] + ("AA" if not genuine.endswith("AA") else "BB"))
    refused(tokens, "a.b.c")
    refused(tokens, "\x00")
