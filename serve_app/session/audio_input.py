"""The session's microphone stream: decoding, resampling to 16 kHz, and recent-audio memory."""

from __future__ import annotations

import numpy as np
import soxr

SAMPLE_RATE = 16000


class AudioFormatError(ValueError):
    """Audio the session cannot take (odd byte count, unsupported rate or format)."""


SUPPORTED_INPUT_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)


class InputResampler:
    """PCM16 at the client's rate -> float32 at 16 kHz, streaming (soxr keeps filter state)."""

    def __init__(self, input_rate: int) -> None:
        if input_rate not in SUPPORTED_INPUT_RATES:
            raise AudioFormatError(
                f"inputSampleRate {input_rate} is not supported; use one of {', '.join(map(str, SUPPORTED_INPUT_RATES))}"
            )
        self.input_rate = input_rate
        self._stream = None if input_rate == SAMPLE_RATE else soxr.ResampleStream(
            input_rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ"
        )

    def push(self, pcm16: bytes) -> np.ndarray:
        if len(pcm16) % 2:
            raise AudioFormatError("PCM16 audio must have an even number of bytes")
        samples = np.frombuffer(pcm16, dtype="<i2").astype(np.float32) / 32768.0
        if self._stream is None:
            return samples
        return self._stream.resample_chunk(samples)


class AudioTimeline:
    """The last ``seconds`` of 16 kHz input in a ring buffer, addressed by absolute sample position."""

    def __init__(self, seconds: float) -> None:
        self.capacity = int(seconds * SAMPLE_RATE)
        self._ring = np.zeros(self.capacity, dtype=np.float32)
        self.end = 0  # absolute position one past the newest sample

    @property
    def start(self) -> int:
        return max(0, self.end - self.capacity)

    def append(self, samples: np.ndarray) -> None:
        kept = samples[-self.capacity :]
        self.end += samples.size - kept.size  # samples older than the ring are skipped, not lost count of
        samples = kept
        first = self.end % self.capacity
        head = min(samples.size, self.capacity - first)
        self._ring[first : first + head] = samples[:head]
        self._ring[: samples.size - head] = samples[head:]
        self.end += samples.size

    def slice(self, start: int, end: int) -> np.ndarray:
        start, end = max(start, self.start), min(end, self.end)
        if end <= start:
            return np.zeros(0, dtype=np.float32)
        indices = np.arange(start, end) % self.capacity
        return self._ring[indices]
