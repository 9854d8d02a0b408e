"""Random-looking identifiers (request ids, device ids, consent strings) drawn in bulk from a seeded
generator, so output is deterministic (``uuid.uuid4`` would not be) and cheap: one numpy draw per
chunk, one string slice per value.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_BASE64URL = np.frombuffer(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", dtype=np.uint8
)
_DASHES = (8, 13, 18, 23)


def _strings(chars: npt.NDArray[np.uint8]) -> list[str]:
    """Rows of an (n, width) ASCII array as strings: one decode, then slices."""
    n, width = chars.shape
    text = np.ascontiguousarray(chars).tobytes().decode("ascii")
    return [text[start : start + width] for start in range(0, n * width, width)]


def hex_tokens(rng: np.random.Generator, count: int, length: int) -> list[str]:
    """``count`` lowercase hex strings of ``length`` characters."""
    return _strings(_HEX[rng.integers(0, 16, (count, length), dtype=np.uint8)])


def base64url_tokens(rng: np.random.Generator, count: int, length: int) -> list[str]:
    """``count`` base64url strings of ``length`` characters (the alphabet of TCF strings)."""
    return _strings(_BASE64URL[rng.integers(0, 64, (count, length), dtype=np.uint8)])


def uuids(rng: np.random.Generator, count: int) -> list[str]:
    """``count`` strings formatted like random (version 4) UUIDs."""
    chars = np.empty((count, 36), dtype=np.uint8)
    body = [i for i in range(36) if i not in _DASHES]
    chars[:, body] = _HEX[rng.integers(0, 16, (count, 32), dtype=np.uint8)]
    chars[:, _DASHES] = ord("-")
    chars[:, 14] = ord("4")  # version nibble
    chars[:, 19] = _HEX[rng.integers(8, 12, count)]  # RFC 4122 variant: 8, 9, a or b
    return _strings(chars)
