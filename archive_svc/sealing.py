"""Encryption at rest of users' assessment data (ASSAY_DATA_KEY_FILE), off by default.

When a key file is configured, the archive seals ``results.test_data``, ``raw_responses`` and
``test_result``, and a queue message stored in the outbox (rows from before migration 0012: a
submission's queue message is now built from its result row), with AES-256-GCM (AES-128/192
for shorter keys) under the file's first key; every key the file lists opens. A sealed value
is a zero byte (no protobuf message, zstd frame or JSON starts with one: field 0 does not
exist), the key id's length and the key id, then nonce and ciphertext. A JSON column of a row
from before migrations 0010/0012 held ``{"$sealed": "v1.<key id>.<base64 nonce+ciphertext>"}``,
which still opens. So each row names its key and keys rotate: add the new key, make it first,
and the old one keeps opening older rows. A row written before any key existed is plain JSON,
protobuf or a zstd frame, and is read as it is.

The result row's columns are sealed as they are: the profile and large raw answers come as
zstd frames already (``archive_svc.profiles``, ``archive_svc.inputs``), which do not deflate,
and the ≈ 90 bytes of an AssessmentData's scores barely. A stored queue message and the JSON
of older rows were deflated (zlib, level 1) before sealing: ciphertext does not compress, and
PostgreSQL compresses a large plain value itself (TOAST), so without it a sealed JSON profile
took 2.5 times the room and the WAL per job grew by half.

Direct AES-GCM under the file's key, not a per-row data key wrapped by it: the file's key is
in the archive's memory either way, so wrapping protects nothing more here, and would double
the work per value. A wrapped data key pays off with a KMS, where the master key never leaves
it; that is a later step. Each value is bound to its place (column and job id, as associated
data), so a ciphertext copied to another row or column does not open.

The file: one key per line, ``<key id> <base64 key>`` (16, 24 or 32 bytes; key ids of
letters, digits, ``_`` and ``-``); blank lines and ``#`` comments are ignored; the first key
seals.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import uuid
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from assaylib.config import ConfigError
from assaylib.errors import Internal

__all__ = ["NO_KEYS", "PROFILE", "SEALED_COLUMNS", "DataKeys"]

SEALED_COLUMNS = ("test_data", "raw_responses", "test_result")
"""The result row's columns that hold a user's data (``bytea``, each sealed as it is)."""
PROFILE = "test_result"
"""The one of them that holds the profile."""
_VERSION = "v1"
_MARK = "$sealed"
_SEALED_TEXT = '{"' + _MARK + '"'
_PAYLOAD_MARK = 0
_NONCE = 12
_LEVEL = 1  # zlib's fastest: most of the gain at a third of level 6's cost
_KEY_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _context(place: str, job_id: object) -> bytes:
    """The associated data binding a value to where it belongs (a job id in any spelling)."""
    job = str(uuid.UUID(str(job_id))) if job_id else ""
    return f"assay/{place}/{job}".encode()


@dataclass(frozen=True)
class DataKeys:
    """The keys of ASSAY_DATA_KEY_FILE: ``current`` seals ("" when none: nothing is sealed),
    each of ``keys`` opens."""

    current: str = ""
    keys: Mapping[str, AESGCM] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str) -> DataKeys:
        """The keys in the file at ``path`` (none when ``path`` is empty); ConfigError when it
        cannot be read or holds no valid key."""
        if not path:
            return NO_KEYS
        try:
            text = Path(path).read_text()
        except OSError as err:
            raise ConfigError(f"ASSAY_DATA_KEY_FILE: cannot read {path}: {err}") from None
        return cls.parse(text)

    @classmethod
    def parse(cls, text: str) -> DataKeys:
        """The keys of a key file's text."""
        keys: dict[str, AESGCM] = {}
        for number, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            key_id, _, encoded = line.partition(" ")
            problem = f"ASSAY_DATA_KEY_FILE line {number}"
            if not _KEY_ID.match(key_id) or key_id in keys:
                raise ConfigError(f"{problem}: a key id of letters, digits, _ and -, once each")
            try:
                secret = base64.b64decode(encoded.strip(), validate=True)
                keys[key_id] = AESGCM(secret)
            except (binascii.Error, ValueError):
                raise ConfigError(
                    f"{problem}: the key must be base64 of 16, 24 or 32 bytes"
                ) from None
        if not keys:
            raise ConfigError("ASSAY_DATA_KEY_FILE holds no key")
        return cls(next(iter(keys)), keys)

    @property
    def enabled(self) -> bool:
        """Whether new values are sealed."""
        return bool(self.current)

    def _seal(self, plain: bytes, place: str, job_id: object, deflate: bool = True) -> bytes:
        nonce = os.urandom(_NONCE)
        deflated = zlib.compress(plain, _LEVEL) if deflate else plain
        return nonce + self.keys[self.current].encrypt(nonce, deflated, _context(place, job_id))

    def _open(
        self, key_id: str, sealed: bytes, place: str, job_id: object, deflated: bool = True
    ) -> bytes:
        key = self.keys.get(key_id)
        if key is None:
            raise Internal(
                f"{place} of job {job_id} is sealed with key {key_id!r}, "
                "which ASSAY_DATA_KEY_FILE does not hold"
            )
        try:
            opened = key.decrypt(sealed[:_NONCE], sealed[_NONCE:], _context(place, job_id))
            return zlib.decompress(opened) if deflated else opened
        except InvalidTag:
            raise Internal(f"{place} of job {job_id} does not open: altered or misplaced") from None

    def seal_json(self, text: str, column: str, job_id: object) -> str:
        """A JSON column's text, sealed (unchanged when no key is configured): the form a
        column held before migrations 0010/0012, which ``open_json`` reads; the archive now
        seals bytes (``seal_column``)."""
        if not self.current:
            return text
        sealed = base64.b64encode(self._seal(text.encode(), column, job_id)).decode()
        return json.dumps({_MARK: f"{_VERSION}.{self.current}.{sealed}"})

    def open_json(self, value: Any, column: str, job_id: object) -> Any:
        """A JSON column's value as stored (text or parsed), opened when sealed."""
        if isinstance(value, str) and value.startswith(_SEALED_TEXT):
            value = json.loads(value)
        if not (isinstance(value, dict) and _MARK in value):
            return value
        _version, key_id, sealed = str(value[_MARK]).split(".", 2)
        return self._open(key_id, base64.b64decode(sealed), column, job_id).decode()

    def _seal_bytes(self, value: bytes, place: str, job_id: object, deflate: bool) -> bytes:
        if not self.current:
            return value
        key_id = self.current.encode()
        header = bytes((_PAYLOAD_MARK, len(key_id))) + key_id
        return header + self._seal(value, place, job_id, deflate)

    def _open_bytes(self, value: bytes, place: str, job_id: object, deflated: bool) -> bytes:
        if not value or value[0] != _PAYLOAD_MARK:
            return value
        length = value[1]
        key_id = value[2 : 2 + length].decode()
        return self._open(key_id, value[2 + length :], place, job_id, deflated)

    def seal_payload(self, payload: bytes, job_id: object) -> bytes:
        """A queue message, sealed (unchanged when no key is configured)."""
        return self._seal_bytes(payload, "queue", job_id, deflate=True)

    def open_payload(self, payload: bytes, job_id: object) -> bytes:
        """A queue message as stored, opened when sealed."""
        return self._open_bytes(payload, "queue", job_id, deflated=True)

    def seal_column(self, value: bytes, column: str, job_id: object) -> bytes:
        """A result row's column as stored (``archive_svc.profiles``, ``archive_svc.inputs``),
        sealed as it is (unchanged when no key is configured)."""
        return self._seal_bytes(value, column, job_id, deflate=False)

    def open_column(self, value: Any, column: str, job_id: object) -> Any:
        """A result row's column opened when sealed: its bytes as stored, or the JSON text of
        a row written before migration 0010 (the profile) or 0012 (the inputs); anything else
        as it is."""
        if isinstance(value, memoryview | bytearray):
            value = bytes(value)
        if not isinstance(value, bytes):
            return self.open_json(value, column, job_id)
        if value.startswith(_SEALED_TEXT.encode()):
            return self.open_json(value.decode(), column, job_id)
        return self._open_bytes(value, column, job_id, deflated=False)

    def seal_profile(self, frame: bytes, job_id: object) -> bytes:
        """A stored profile (a zstd frame, ``archive_svc.profiles``), sealed as it is."""
        return self.seal_column(frame, PROFILE, job_id)

    def open_profile(self, value: Any, job_id: object) -> Any:
        """A stored profile opened when sealed (``open_column``)."""
        return self.open_column(value, PROFILE, job_id)

    def open_row(self, row: Mapping[str, Any]) -> Mapping[str, Any]:
        """A row holding some of SEALED_COLUMNS (and job_id), its sealed columns opened; the
        row itself when nothing in it is sealed."""
        opened: dict[str, Any] | None = None
        for column in SEALED_COLUMNS:
            value = row.get(column)
            plain = self.open_column(value, column, row["job_id"])
            if plain is not value:
                opened = opened if opened is not None else dict(row)
                opened[column] = plain
        return row if opened is None else opened


NO_KEYS = DataKeys()
"""No key file: nothing is sealed; rows sealed earlier do not open."""
