"""A call's audio: Opus frames in -> PCM16 for the engine; reply PCM16 -> paced 20 ms frames out.

aiortc decodes and encodes the Opus RTP; PyAV's resampler (libswresample, stateful, so 20 ms
pieces join without clicks) converts rates and downmixes the browser's stereo.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

logger = logging.getLogger(__name__)

RTC_RATE = 48_000  # Opus's clock
FRAME_S = 0.02
FRAME_SAMPLES = int(RTC_RATE * FRAME_S)
MAX_BUFFERED_S = 120.0  # bound on unplayed audio; the engine keeps only playback_lead_ms ahead


class Resampler:
    """PCM16 mono at one rate -> PCM16 mono at another, or an aiortc frame -> PCM16 mono."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
        self._pts = 0

    def frame(self, frame: av.AudioFrame) -> bytes:
        return b"".join(f.to_ndarray().tobytes() for f in self._resampler.resample(frame))

    def pcm(self, pcm16: bytes, rate: int) -> bytes:
        samples = np.frombuffer(pcm16, dtype="<i2")
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = rate, self._pts, Fraction(1, rate)
        self._pts += samples.size
        return self.frame(frame)


@dataclass
class Segment:
    """One response's audio in the buffer."""

    response_id: str
    item_id: str
    pcm: bytearray = field(default_factory=bytearray)  # 48 kHz PCM16 not yet played
    played_samples: int = 0
    ended: bool = False  # its response.done has gone out: no more audio will come

    @property
    def played_ms(self) -> int:
        return int(self.played_samples * 1000 / RTC_RATE)


class ReplyTrack(MediaStreamTrack):
    """The outbound audio track: a clearable buffer of reply audio, played out at 20 ms a frame.

    ``recv`` paces itself on the wall clock (as aiortc's own AudioStreamTrack does) and sends
    silence when nothing is buffered, so RTP timestamps stay continuous between replies.
    ``on_drained(segment)`` fires when a finished response's last sample has been played.
    """

    kind = "audio"

    def __init__(self, on_drained: Callable[[Segment], None]) -> None:
        super().__init__()
        self.on_drained = on_drained
        self.segments: deque[Segment] = deque()
        self._start: float | None = None
        self._timestamp = 0

    def write(self, response_id: str, item_id: str, pcm48: bytes) -> bool:
        """Queue audio; True when it starts a response's segment (the buffer has 'started')."""
        new = not self.segments or self.segments[-1].response_id != response_id
        if new:
            self.segments.append(Segment(response_id, item_id))
        buffered = sum(len(s.pcm) for s in self.segments)
        room = int(MAX_BUFFERED_S * RTC_RATE) * 2 - buffered
        if room < len(pcm48):
            logger.warning("reply audio buffer full (%.0f s); dropping %d bytes", MAX_BUFFERED_S, len(pcm48) - room)
        self.segments[-1].pcm += pcm48[: max(0, room)]
        return new

    def end(self, response_id: str) -> Segment | None:
        """Its response is done; returns the segment if it has already played out (stopped now)."""
        for segment in self.segments:
            if segment.response_id == response_id:
                segment.ended = True
                if not segment.pcm:
                    self.segments.remove(segment)
                    return segment
        return None

    def take(self, response_id: str | None = None) -> list[Segment]:
        """Drop the unplayed audio (of one response, or all), returning the segments it belonged to."""
        taken = [s for s in self.segments if response_id is None or s.response_id == response_id]
        for segment in taken:
            self.segments.remove(segment)
        return taken

    def _next_payload(self) -> bytes:
        needed = FRAME_SAMPLES * 2
        payload = bytearray()
        while self.segments and len(payload) < needed:
            head = self.segments[0]
            piece = head.pcm[: needed - len(payload)]
            del head.pcm[: len(piece)]
            head.played_samples += len(piece) // 2
            payload += piece
            if head.pcm:
                break
            if not head.ended:
                break  # more of this response is on its way: play silence meanwhile
            self.segments.popleft()
            self.on_drained(head)
        return bytes(payload) + b"\x00" * (needed - len(payload))

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        else:
            self._timestamp += FRAME_SAMPLES
            wait = self._start + self._timestamp / RTC_RATE - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)  # the playout clock itself, not a synchronisation
        samples = np.frombuffer(self._next_payload(), dtype="<i2").reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = RTC_RATE, self._timestamp, Fraction(1, RTC_RATE)
        return frame
