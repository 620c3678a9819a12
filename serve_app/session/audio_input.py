"""The session's microphone stream: decoding, resampling to 16 kHz, recent-audio memory, the VAD feed."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import soxr

from serve_app.clients.vad_ticker import VadFrames, VadStream, VadTicker

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

    def release(self) -> None:
        """Give the ring's memory back now (a 70 s float32 ring is 4.5 MB); the positions stay valid,
        only the audio is gone."""
        self.capacity = 1
        self._ring = np.zeros(1, dtype=np.float32)

    def slice(self, start: int, end: int) -> np.ndarray:
        start, end = max(start, self.start), min(end, self.end)
        if end <= start:
            return np.zeros(0, dtype=np.float32)
        indices = np.arange(start, end) % self.capacity
        return self._ring[indices]


class InputAudio:
    """The microphone side of one session: resampled audio on a timeline, fed to the VAD stream.

    It remembers where the audio not yet committed as a turn begins, so a turn's audio is
    everything from there (plus a little padding before the speech) to where the turn ended.
    """

    def __init__(self, timeline_s: float, prefix_padding_ms: int, vad_ticker: VadTicker | None,
                 on_frames: Callable[[VadFrames], None], vad_pending_s: float | None = None) -> None:
        self.timeline = AudioTimeline(timeline_s)
        self.prefix_padding_ms = prefix_padding_ms  # follows the turn-detection options
        self.buffer_start = 0  # timeline position where the uncommitted audio begins
        self._resampler: InputResampler | None = None
        self._vad_ticker, self._on_frames = vad_ticker, on_frames
        self._vad: VadStream | None = None
        self._vad_pending = None if vad_pending_s is None else int(vad_pending_s * SAMPLE_RATE)

    @property
    def end(self) -> int:
        return self.timeline.end

    def open(self, input_rate: int) -> None:
        """A (re)started conversation at ``input_rate``; the VAD stream is opened once, on first use."""
        self._resampler = InputResampler(input_rate)
        if self._vad is None and self._vad_ticker is not None:
            self._vad = self._vad_ticker.open_stream(self._on_frames, self._vad_pending)

    def set_rate(self, input_rate: int) -> None:
        if self._resampler is None or self._resampler.input_rate != input_rate:
            self._resampler = InputResampler(input_rate)

    def push(self, pcm16: bytes, to_vad: bool) -> np.ndarray:
        """Raises AudioFormatError for audio the session cannot take."""
        samples = self._resampler.push(pcm16)
        self.timeline.append(samples)
        if to_vad and self._vad is not None:
            self._vad.push(samples)
        return samples

    @property
    def vad_skipped(self) -> int:
        """Samples the VAD never scored because too many were waiting for it."""
        return self._vad.skipped if self._vad is not None else 0

    def utterance_start(self, speech_start: int) -> int:
        """Where an utterance's audio begins: a little before its speech, never before the last turn."""
        return max(self.buffer_start, speech_start - self.prefix_padding_ms * SAMPLE_RATE // 1000)

    def slice(self, start: int, end: int) -> np.ndarray:
        return self.timeline.slice(start, end)

    def commit_until(self, end: int) -> int:
        """The audio up to ``end`` is a turn now; returns where the uncommitted audio began."""
        start, self.buffer_start = self.buffer_start, end
        return start

    def clear(self) -> None:
        self.buffer_start = self.timeline.end

    def close(self) -> None:
        """The socket is gone: the VAD stream ends, and the audio with it (a turn's audio was copied
        out when it was committed). Without this a closed session's ring stayed allocated until the
        cyclic GC freed the session (bench/soak.py)."""
        if self._vad is not None:
            self._vad.close()
        self.timeline.release()
