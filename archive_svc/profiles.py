"""How the archive stores a persona profile: ``results.test_result`` is ``bytea`` holding the
profile's protobuf bytes compressed by zstd with a dictionary trained on profiles.

A profile is some 9 KB of sentences from the analyzer's tables in its locale; a dictionary
per locale (64 KiB) holds those once, so a profile takes about 0.7 KB (pglz on its JSON:
5.5 KB; one 32 KiB dictionary for both locales: 1.2–1.6 KB), and protobuf bytes cost a
fraction of ``json_format`` to write and read (11 µs against 240, 6 µs against 940). The
dictionaries ship in ``profile_dicts/`` (``<dict id>.zdict``, made by
``python -m tools.train_profile_dict``); each zstd frame names its dictionary, so a later
dictionary joins the directory and ``CURRENT_DICT_IDS`` while rows compressed with an older one
still read. A frame naming a dictionary the archive does not ship is an error, never a wrong
profile.

What a stored value is, told by its first bytes:

- ``28 b5 2f fd`` (zstd's magic): a frame of the profile's protobuf bytes;
- ``00``: such a frame sealed with ASSAY_DATA_KEY_FILE (``sealing``; not deflated again);
- ``{``: proto3 JSON from before migration 0010, plain or as ``{"$sealed": …}``.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import zstandard
from google.protobuf import json_format

from assay.common.v1 import assessment_pb2
from assaylib.errors import Internal
from assaylib.jobs import DEFAULT_LOCALE

__all__ = ["CURRENT_DICT_IDS", "compress", "dictionary_path", "encode", "parse_into"]

CURRENT_DICT_IDS = {"id": 32769, "en": 32770}
"""The dictionary new profiles of each locale are compressed with (ids below 32768 belong to
zstd's public registry); a profile of another locale uses the default locale's."""
LEVEL = 3
DICTIONARIES = Path(__file__).resolve().parent / "profile_dicts"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def dictionary_path(dict_id: int) -> Path:
    """Where the dictionary ``dict_id`` ships."""
    return DICTIONARIES / f"{dict_id}.zdict"


@functools.cache
def _dictionary(dict_id: int) -> zstandard.ZstdCompressionDict:
    path = dictionary_path(dict_id)
    if not path.exists():
        raise Internal(
            f"a stored profile is compressed with dictionary {dict_id}, which this archive does"
            f" not ship (it has {sorted(known_dict_ids())})"
        )
    dictionary = zstandard.ZstdCompressionDict(path.read_bytes())
    if dictionary.dict_id() != dict_id:
        raise Internal(f"{path} holds dictionary {dictionary.dict_id()}, not {dict_id}")
    return dictionary


def known_dict_ids() -> set[int]:
    """The ids of the dictionaries shipped."""
    return {int(path.stem) for path in DICTIONARIES.glob("*.zdict")}


@functools.cache
def _compressor(dict_id: int) -> zstandard.ZstdCompressor:
    return zstandard.ZstdCompressor(
        level=LEVEL, dict_data=_dictionary(dict_id), write_checksum=False
    )


@functools.cache
def _decompressor(dict_id: int) -> zstandard.ZstdDecompressor:
    return zstandard.ZstdDecompressor(dict_data=_dictionary(dict_id))


def compress(serialized: bytes, locale: str) -> bytes:
    """A profile's protobuf bytes as stored: a zstd frame naming the dictionary of the
    profile's ``locale``."""
    dict_id = CURRENT_DICT_IDS.get(locale) or CURRENT_DICT_IDS[DEFAULT_LOCALE]
    return _compressor(dict_id).compress(serialized)


def encode(profile: assessment_pb2.PersonaProfile) -> bytes:
    """A profile as stored (before sealing)."""
    return compress(profile.SerializeToString(), profile.analyzer.locale)


def decompress(frame: bytes) -> bytes:
    """A profile's protobuf bytes from a stored zstd frame."""
    dict_id = zstandard.get_frame_parameters(frame).dict_id
    return _decompressor(dict_id).decompress(frame)


def parse_into(stored: Any, profile: assessment_pb2.PersonaProfile) -> None:
    """Fill ``profile`` from a stored value, unsealed: a zstd frame, or the JSON of a row
    written before migration 0010 (bytes, text, or parsed)."""
    if isinstance(stored, memoryview | bytearray):
        stored = bytes(stored)
    if isinstance(stored, bytes) and stored.startswith(ZSTD_MAGIC):
        profile.ParseFromString(decompress(stored))
        return
    if isinstance(stored, str | bytes):
        stored = json.loads(stored)
    json_format.ParseDict(stored, profile, ignore_unknown_fields=True)
