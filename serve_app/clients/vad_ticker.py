"""One VAD call per tick for all of an ingress replica's sessions.

A handle call costs ~3 ms of overhead, so per-frame or per-session calls cannot scale to 100
sessions; instead each tick gathers every stream's whole frames into one batched request. If the
VAD service fails, frames are scored by energy instead (fixed-silence endpointing still works)
and the result says so.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np

from deployments.vad import FRAME_SAMPLES, VadRequest, VadResult, initial_states

logger = logging.getLogger(__name__)

ENERGY_SPEECH_DBFS = -40.0  # fallback rule when silero is unreachable


@dataclass
class VadFrames:
    """Speech probabilities for consecutive frames of one stream, ending at ``end_sample``."""

    probabilities: np.ndarray
    end_sample: int
    degraded: bool = False
    error: str | None = None


def energy_probabilities(frames: np.ndarray) -> np.ndarray:
    rms = np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=-1)) + 1e-9
    return (20 * np.log10(rms) > ENERGY_SPEECH_DBFS).astype(np.float32)


class VadStream:
    """One session's audio waiting for the next tick. At most ``max_pending`` samples wait: when the
    VAD falls behind (or a client sends faster than it can score), the oldest are skipped, and
    ``position`` moves past them so every later frame keeps its place on the timeline."""

    def __init__(self, ticker: VadTicker, on_frames: Callable[[VadFrames], None],
                 max_pending: int | None = None) -> None:
        self._ticker = ticker
        self.on_frames = on_frames
        self.state = initial_states(1)[0]
        self._pending: list[np.ndarray] = []
        self._pending_samples = 0
        self.max_pending = max_pending
        self.position = 0  # samples already scored (or skipped)
        self.skipped = 0  # samples never scored because too many were waiting

    def push(self, samples: np.ndarray) -> None:
        if samples.size:
            self._pending.append(samples)
            self._pending_samples += samples.size
            if self.max_pending is not None and self._pending_samples > self.max_pending:
                self._skip(self._pending_samples - self.max_pending)
            self._ticker.wake()

    def _skip(self, count: int) -> None:
        audio = np.concatenate(self._pending)[count:]
        self._pending = [audio] if audio.size else []
        self._pending_samples = audio.size
        self.position += count
        self.skipped += count

    def whole_frames(self, limit: int) -> np.ndarray | None:
        count = min(self._pending_samples // FRAME_SAMPLES, limit)
        if count == 0:
            return None
        audio = np.concatenate(self._pending)
        take = count * FRAME_SAMPLES
        rest = audio[take:]
        self._pending = [rest] if rest.size else []
        self._pending_samples = rest.size
        return audio[:take].reshape(count, FRAME_SAMPLES)

    def close(self) -> None:
        self._ticker.streams.discard(self)


class VadTicker:
    def __init__(self, detect: Callable[[VadRequest], Awaitable[VadResult]], tick_s: float,
                 max_frames_per_tick: int = 32) -> None:
        self.detect = detect
        self.tick_s = tick_s
        self.max_frames = max_frames_per_tick
        self.streams: set[VadStream] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.calls = 0  # VAD service calls made, for the benchmark

    def open_stream(self, on_frames: Callable[[VadFrames], None], max_pending: int | None = None) -> VadStream:
        stream = VadStream(self, on_frames, max_pending)
        self.streams.add(stream)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())
        return stream

    def wake(self) -> None:
        self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(self.tick_s)  # the tick: let other sessions' audio join this call
            try:
                await self._tick()
            except Exception:
                logger.exception("VAD tick failed")

    async def _tick(self) -> None:
        batch = [(s, f) for s in list(self.streams) if (f := s.whole_frames(self.max_frames)) is not None]
        if not batch:
            return
        if any(s._pending_samples >= FRAME_SAMPLES for s, _ in batch):
            self._wake.set()  # more than one tick's worth is waiting: come straight back
        steps = np.array([f.shape[0] for _, f in batch], dtype=np.int32)
        frames = np.zeros((len(batch), int(steps.max()), FRAME_SAMPLES), dtype=np.float32)
        for row, (_, f) in enumerate(batch):
            frames[row, : f.shape[0]] = f
        states = np.stack([s.state for s, _ in batch])
        try:
            self.calls += 1
            result = await self.detect(VadRequest(frames, states, steps))
            error = None
        except Exception as failure:  # noqa: BLE001 - degrade to energy, tell the sessions
            result, error = None, str(failure)[:200]
        for row, (stream, f) in enumerate(batch):
            if result is not None:
                stream.state = result.states[row]
                probabilities = result.probabilities[row, : f.shape[0]]
            else:
                stream.state = initial_states(1)[0]
                probabilities = energy_probabilities(f)
            stream.position += f.shape[0] * FRAME_SAMPLES
            stream.on_frames(VadFrames(probabilities, stream.position, degraded=result is None, error=error))
