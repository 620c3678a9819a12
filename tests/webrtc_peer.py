"""A pure-Python WebRTC client (aiortc), as a browser app built for OpenAI Realtime would connect.

It offers an audio track and the ``oai-events`` data channel, posts the offer to
``/v1/realtime/calls``, plays clips into its microphone track in real time, records the reply
track's frames, and validates every data-channel event against the `openai` SDK's GA types.
"""

from __future__ import annotations

import asyncio
import json
import time
from fractions import Fraction
from typing import Any

import av
import httpx
import numpy as np
import soxr
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from tests.realtime_harness import GA_EVENTS

RATE = 48_000
FRAME = 960  # 20 ms


class Microphone(MediaStreamTrack):
    """Plays queued speech at real-time pace, then room silence, like a live microphone."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self.pending = bytearray()
        self._start: float | None = None
        self._timestamp = 0

    def say(self, pcm16_16k: np.ndarray) -> None:
        pcm = soxr.resample(pcm16_16k.astype(np.float32) / 32768, 16000, RATE)
        self.pending += (np.clip(pcm, -1, 1) * 32767).astype("<i2").tobytes()

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        else:
            self._timestamp += FRAME
            wait = self._start + self._timestamp / RATE - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)  # a microphone's clock
        piece = bytes(self.pending[: FRAME * 2])
        del self.pending[: FRAME * 2]
        samples = np.frombuffer(piece + b"\x00" * (FRAME * 2 - len(piece)), dtype="<i2").reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = RATE, self._timestamp, Fraction(1, RATE)
        return frame


class Peer:
    def __init__(self) -> None:
        self.pc = RTCPeerConnection()
        self.microphone = Microphone()
        self.pc.addTrack(self.microphone)
        self.channel = self.pc.createDataChannel("oai-events")
        self.events: list[dict[str, Any]] = []
        self.received_at: dict[int, float] = {}  # event index -> monotonic time it arrived
        self.frames: list[tuple[float, float]] = []  # (monotonic time, RMS) of each reply frame
        self._inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.opened = asyncio.Event()
        self.closed = asyncio.Event()
        self.channel.on("open", self.opened.set)
        self.channel.on("close", self.closed.set)
        self.channel.on("message", self._message)
        self.pc.on("track", self._track)
        self._tasks: list[asyncio.Task] = []
        self._frame_arrived = asyncio.Condition()

    def _message(self, text: str) -> None:
        event = json.loads(text)
        GA_EVENTS.validate_python(event)  # what the Agents SDKs check too
        self.received_at[len(self.events)] = time.monotonic()
        self.events.append(event)
        self._inbox.put_nowait(event)

    def _track(self, track: MediaStreamTrack) -> None:
        async def record() -> None:
            while True:
                try:
                    frame = await track.recv()
                except MediaStreamError:
                    return
                samples = frame.to_ndarray().astype(np.float32) / 32768
                self.frames.append((time.monotonic(), float(np.sqrt(np.mean(samples**2)))))
                async with self._frame_arrived:
                    self._frame_arrived.notify_all()

        self._tasks.append(asyncio.get_running_loop().create_task(record()))

    async def offer(self) -> str:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.pc.localDescription.sdp

    async def call(self, url: str, key: str | None = None) -> httpx.Response:
        """The raw flow: ``application/sdp`` in, the answer out; the answer is applied on 201."""
        headers = {"Content-Type": "application/sdp"} | ({"Authorization": f"Bearer {key}"} if key else {})
        async with httpx.AsyncClient() as http:
            response = await http.post(url, content=await self.offer(), headers=headers)
        if response.status_code == 201:
            await self.answer(response.text)
        return response

    async def answer(self, sdp: str) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
        await asyncio.wait_for(self.opened.wait(), 20)

    def send(self, event: dict[str, Any]) -> None:
        self.channel.send(json.dumps(event))

    async def until(self, kind: str, timeout: float = 90, **match: Any) -> dict[str, Any]:
        while True:
            event = await asyncio.wait_for(self._inbox.get(), timeout)
            if event["type"] == kind and all(event.get(k) == v for k, v in match.items()):
                return event

    def types(self) -> list[str]:
        return [e["type"] for e in self.events]

    def index(self, kind: str, **match: Any) -> int:
        return next(i for i, e in enumerate(self.events)
                    if e["type"] == kind and all(e.get(k) == v for k, v in match.items()))

    def time_of(self, kind: str, **match: Any) -> float:
        return self.received_at[self.index(kind, **match)]

    def voiced_s(self, start: float = 0.0, end: float = float("inf"), threshold: float = 0.01) -> float:
        """Seconds of reply audio with speech-like energy received between two instants."""
        return sum(0.02 for at, rms in self.frames if start <= at < end and rms > threshold)

    async def heard(self, seconds: float, since: float, timeout: float = 30) -> None:
        """Wait until this much voiced reply audio has arrived since an instant."""
        async with self._frame_arrived:
            await asyncio.wait_for(self._frame_arrived.wait_for(lambda: self.voiced_s(since) >= seconds), timeout)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await self.pc.close()
