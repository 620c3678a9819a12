"""G.711 µ-law <-> PCM16, the only audio Twilio Media Streams carries (8 kHz mono, 8 bits a sample).

Two lookup tables built once with numpy from the reference algorithm (CCITT G.711 as in Sun's
``g711.c``, which CPython's ``audioop`` also uses), so encoding and decoding are one indexing
operation each and do not depend on ``audioop``, which Python 3.13 removed.
"""

from __future__ import annotations

import numpy as np

_SEGMENT_ENDS = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF])  # 14-bit magnitudes
_CLIP = 8159
_BIAS = 0x84


def _encode_table() -> np.ndarray:
    """µ-law byte for every PCM16 value, indexed by the sample's bits read as uint16."""
    pcm = np.arange(65536, dtype=np.int64).astype(np.uint16).view(np.int16).astype(np.int64) >> 2  # 14-bit
    mask = np.where(pcm < 0, 0x7F, 0xFF)
    magnitude = np.minimum(np.abs(pcm), _CLIP) + (_BIAS >> 2)
    segment = np.searchsorted(_SEGMENT_ENDS, magnitude, side="left")
    code = (np.minimum(segment, 7) << 4) | ((magnitude >> (np.minimum(segment, 7) + 1)) & 0x0F)
    code = np.where(segment >= 8, 0x7F, code)
    return ((code ^ mask) & 0xFF).astype(np.uint8)


def _decode_table() -> np.ndarray:
    code = ~np.arange(256, dtype=np.int64) & 0xFF
    magnitude = (((code & 0x0F) << 3) + _BIAS) << ((code & 0x70) >> 4)
    return np.where(code & 0x80, _BIAS - magnitude, magnitude - _BIAS).astype("<i2")


_ENCODE = _encode_table()
_DECODE = _decode_table()


def decode(mulaw: bytes) -> bytes:
    """µ-law bytes -> PCM16 little-endian, one sample per byte."""
    return _DECODE[np.frombuffer(mulaw, dtype=np.uint8)].tobytes()


def encode(pcm16: bytes) -> bytes:
    """PCM16 little-endian -> µ-law bytes (an odd trailing byte is not a sample and is dropped)."""
    samples = np.frombuffer(pcm16[: len(pcm16) // 2 * 2], dtype="<u2")
    return _ENCODE[samples].tobytes()
