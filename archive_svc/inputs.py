"""How the archive stores a submission's inputs: ``results.test_data`` (AssessmentData) and
``results.raw_responses`` (RawResponses) are ``bytea`` holding the message's protobuf bytes,
a zstd frame of them when that is smaller.

Written once, read by the relay to build the submission's queue message (its outbox row has
no payload of its own since migration 0012), by GetResult/ListResults and by a retry. The
scores of an AssessmentData are some 90 bytes of protobuf against 600 of JSON (JSONB keeps
every key), and random numbers do not compress: zstd makes them no smaller.
Raw answers are question ids and numbers, which do: 30 numeric answers take 630 bytes of
protobuf and 230 as zstd at level 3, 180 answers 3.7 KB and 640 B. So a value of at least
``COMPRESS_FROM`` bytes is compressed, and its frame kept when smaller. No dictionary: the
question ids are the caller's, and no corpus of real answers exists to train one on (a frame
naming a dictionary is refused, never read wrong). Protobuf costs a fraction of
``json_format``: 1–11 µs to write a value against 160–1,300, 1–9 µs to read it against
600–3,400 (bench/RESULTS.md, WAL step 3).

What a stored value is, told by its first bytes (as ``archive_svc.profiles``):

- ``28 b5 2f fd`` (zstd's magic): a frame of the message's protobuf bytes;
- ``00``: a value sealed with ASSAY_DATA_KEY_FILE (``sealing``; sealed as it is, never
  deflated: a frame does not deflate, and 90 bytes of scores barely);
- ``{``: proto3 JSON from before migration 0012, plain or as ``{"$sealed": …}``;
- nothing: an empty message (an erased row, a submission without raw answers);
- anything else: the message's protobuf bytes.

Protobuf bytes never start with ``00`` (field 0 does not exist). They start with ``(`` or
``{`` only when their first field is 5 (a varint) or 15 (a group): unknown fields today (a
caller's), maybe a later field; ``encode`` stores such a value as a zstd frame whatever its
size, so it never reads as JSON or a frame it is not.
"""

from __future__ import annotations

import functools
import json
from typing import Any, TypeVar

import zstandard
from google.protobuf import json_format
from google.protobuf.message import Message

from archive_svc.profiles import ZSTD_MAGIC
from assaylib.errors import Internal

__all__ = ["COMPRESS_FROM", "encode", "parse_into"]

COMPRESS_FROM = 128
"""Values shorter than this are stored as protobuf: a frame's header (6–9 bytes) would eat
the little zstd finds in them."""
LEVEL = 3
_AMBIGUOUS = frozenset(b"({")
"""First bytes that a stored protobuf value must not have (a frame's, legacy JSON's)."""

M = TypeVar("M", bound=Message)


@functools.cache
def _compressor() -> zstandard.ZstdCompressor:
    return zstandard.ZstdCompressor(level=LEVEL, write_checksum=False)


@functools.cache
def _decompressor() -> zstandard.ZstdDecompressor:
    return zstandard.ZstdDecompressor()


def encode(message: Message) -> bytes:
    """A submission's AssessmentData or RawResponses as stored (before sealing)."""
    serialized = message.SerializeToString()
    if serialized[:1] and serialized[0] in _AMBIGUOUS:
        return _compressor().compress(serialized)
    if len(serialized) >= COMPRESS_FROM:
        frame = _compressor().compress(serialized)
        if len(frame) < len(serialized):
            return frame
    return serialized


def _decompress(frame: bytes) -> bytes:
    dict_id = zstandard.get_frame_parameters(frame).dict_id
    if dict_id:
        raise Internal(f"a stored input names zstd dictionary {dict_id}; inputs use none")
    return _decompressor().decompress(frame)


def parse_into(stored: Any, message: M) -> M:
    """Fill ``message`` from a stored value, unsealed (``DataKeys.open_row``): bytes as
    ``encode`` writes them, or the JSON of a row written before migration 0012 (bytes, text,
    or parsed). Returns ``message``."""
    if isinstance(stored, memoryview | bytearray):
        stored = bytes(stored)
    if isinstance(stored, bytes):
        if stored.startswith(ZSTD_MAGIC):
            message.ParseFromString(_decompress(stored))
            return message
        if not stored.startswith(b"{"):
            message.ParseFromString(stored)
            return message
    if isinstance(stored, str | bytes):
        stored = json.loads(stored)
    json_format.ParseDict(stored, message, ignore_unknown_fields=True)
    return message
