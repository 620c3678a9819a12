"""PCM helpers shared by the audio services: validation, dtype conversion and resampling."""

from __future__ import annotations

import numpy as np
import soxr

from deployments.errors import ModelInputError


def as_float32_mono(audio: np.ndarray | bytes, *, what: str = "audio") -> np.ndarray:
    """Accept PCM16 bytes, an int16 array or a float32 array in [-1, 1]; return float32 mono."""
    if isinstance(audio, (bytes, bytearray, memoryview)):
        if len(audio) % 2:
            raise ModelInputError(f"{what}: PCM16 bytes must have an even length", "bad_audio")
        audio = np.frombuffer(audio, dtype="<i2")
    if not isinstance(audio, np.ndarray):
        raise ModelInputError(f"{what}: expected bytes or a numpy array, got {type(audio).__name__}", "bad_audio")
    if audio.ndim != 1:
        raise ModelInputError(f"{what}: expected mono (1-D) samples, got shape {audio.shape}", "bad_audio")
    if audio.size == 0:
        raise ModelInputError(f"{what}: no samples", "empty_audio")
    if audio.dtype == np.int16:
        return audio.astype(np.float32) / 32768.0
    if audio.dtype == np.float32:
        if not np.isfinite(audio).all():
            raise ModelInputError(f"{what}: samples contain NaN or infinity", "bad_audio")
        return audio
    raise ModelInputError(f"{what}: unsupported sample dtype {audio.dtype} (use int16 or float32)", "bad_audio")


def float_to_pcm16(audio: np.ndarray) -> bytes:
    return (np.clip(audio, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


def resample(audio: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """High-quality one-shot resampling (soxr); a no-op when the rates match."""
    if from_rate == to_rate:
        return audio
    return soxr.resample(audio, from_rate, to_rate, quality="HQ")
