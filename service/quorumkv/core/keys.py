"""Validation of keys as they arrive in URL paths (percent-encoded UTF-8, 1..1024 bytes)."""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

MAX_KEY_BYTES = 1024


class InvalidKey(ValueError):
    pass


def decode_key(raw: str) -> str:
    """Decode the raw (still percent-encoded) path segment of a key, strictly."""
    if not raw:
        raise InvalidKey("the key is empty")
    if "%" in raw and not _valid_escapes(raw):
        raise InvalidKey("the key has an invalid percent-escape")
    data = unquote_to_bytes(raw)
    if len(data) > MAX_KEY_BYTES:
        raise InvalidKey(f"the key is {len(data)} bytes, more than {MAX_KEY_BYTES}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidKey("the key is not valid UTF-8") from exc


def _valid_escapes(raw: str) -> bool:
    hexdigits = "0123456789abcdefABCDEF"
    i = raw.find("%")
    while i != -1:
        if i + 3 > len(raw) or raw[i + 1] not in hexdigits or raw[i + 2] not in hexdigits:
            return False
        i = raw.find("%", i + 3)
    return True
