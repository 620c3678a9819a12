"""Audio formats on the wire (PCM16 24 kHz, G.711 µ-law and A-law at 8 kHz) <-> the engine's PCM16.

The engine takes and gives PCM16 at a rate it is configured with, so G.711 is only companded
here; resampling happens once, in the engine (input) and the TTS service (output).
"""

from __future__ import annotations

import audioop  # G.711 companding; in the standard library up to Python 3.12
import base64
import binascii
from collections.abc import Iterator

from serve_app.protocols.openai_realtime.errors import INVALID_VALUE, ProtocolError

PCM, PCMU, PCMA = "audio/pcm", "audio/pcmu", "audio/pcma"
SAMPLE_RATE = {PCM: 24000, PCMU: 8000, PCMA: 8000}
BYTES_PER_SAMPLE = {PCM: 2, PCMU: 1, PCMA: 1}
MAX_DELTA_BYTES = 96_000  # 2 s of 24 kHz PCM16; as base64 in JSON about 128 KB, far under the 1 MiB frame limit


def decode_base64(data: str, what: str = "audio") -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as error:
        raise ProtocolError(f"{what} is not valid base64: {error}", INVALID_VALUE) from error


def to_pcm16(payload: bytes, fmt: str) -> bytes:
    """Wire audio in ``fmt`` -> PCM16 little-endian at SAMPLE_RATE[fmt]."""
    if fmt == PCMU:
        return audioop.ulaw2lin(payload, 2)
    if fmt == PCMA:
        return audioop.alaw2lin(payload, 2)
    if len(payload) % 2:
        raise ProtocolError("audio/pcm must have an even number of bytes (16-bit samples)", INVALID_VALUE)
    return payload


def from_pcm16(pcm16: bytes, fmt: str) -> bytes:
    if fmt == PCMU:
        return audioop.lin2ulaw(pcm16, 2)
    if fmt == PCMA:
        return audioop.lin2alaw(pcm16, 2)
    return pcm16


def duration_ms(payload_bytes: int, fmt: str) -> float:
    return payload_bytes / BYTES_PER_SAMPLE[fmt] / SAMPLE_RATE[fmt] * 1000


def delta_pieces(wire_audio: bytes) -> Iterator[str]:
    """Base64 pieces of at most MAX_DELTA_BYTES each (an even count, so no sample is split)."""
    for start in range(0, len(wire_audio), MAX_DELTA_BYTES):
        yield base64.b64encode(wire_audio[start : start + MAX_DELTA_BYTES]).decode()
