"""A pure-Python Twilio: the far end of a Media Streams socket, behaving as Twilio's cloud does.

Twilio's cloud cannot run here, so this is the fake at its wire boundary (a real WebSocket client,
real JSON on a real socket). It sends ``connected`` and ``start`` (with the ``<Stream>``'s
parameters), then the caller's microphone as 20 ms µ-law ``media`` frames in real time, room
silence when the caller says nothing, as a phone line does; ``dtmf`` keys; ``stop`` on hang-up.
What the server sends it plays in real time after a jitter delay, echoing each ``mark`` when its
playback reaches it; a ``clear`` drops what is buffered and echoes the pending marks at once, as
Twilio's docs say it does.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Self
from xml.etree import ElementTree

import numpy as np
import soxr
import websockets

from serve_app.protocols.twilio import mulaw

FRAME_S = 0.020
FRAME_BYTES = 160
SILENCE = b"\xff" * FRAME_BYTES  # µ-law of 0


def to_mulaw_8k(pcm16_16k: np.ndarray) -> bytes:
    """A 16 kHz corpus clip as a phone line carries it."""
    samples = soxr.resample(pcm16_16k.astype(np.float32) / 32768, 16000, 8000)
    return mulaw.encode((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())


def parse_twiml(text: str) -> tuple[str, dict[str, str]]:
    """The ``<Connect><Stream url>`` of a TwiML answer and its ``<Parameter>``s."""
    stream = ElementTree.fromstring(text).find("./Connect/Stream")
    assert stream is not None, text
    return stream.attrib["url"], {p.attrib["name"]: p.attrib["value"] for p in stream.findall("Parameter")}


@dataclass
class Heard:
    """What the caller's side has received and played so far."""

    received: list[dict[str, Any]] = field(default_factory=list)  # every message from the server
    echoed: list[str] = field(default_factory=list)  # marks echoed because their audio was played
    dropped: list[str] = field(default_factory=list)  # marks echoed because a clear dropped their audio
    played_bytes: int = 0
    buffered_bytes: int = 0  # received, not yet played
    by_event: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def add(self, message: dict[str, Any]) -> None:
        self.received.append(message)
        self.by_event.setdefault(message["event"], []).append(message)

    def of(self, event: str) -> list[dict[str, Any]]:
        return self.by_event.get(event, [])


class TwilioCall:
    def __init__(self, url: str, *, parameters: dict[str, str] | None = None, headers: dict[str, str] | None = None,
                 jitter_ms: int = 200, call_sid: str = "CA00000000000000000000000000000001") -> None:
        self.url, self.parameters, self.headers = url, parameters or {}, headers or {}
        self.jitter_s = jitter_ms / 1000
        self.call_sid, self.stream_sid = call_sid, "MZ00000000000000000000000000000001"
        self.heard = Heard()
        self.closed = asyncio.Event()
        self._changed = asyncio.Condition()
        self._speech: deque[bytes] = deque()  # the caller's next frames
        self._buffer = bytearray()  # received audio not yet played
        self._marks: deque[tuple[int, str]] = deque()  # (byte position in the received audio, name)
        self._received_bytes = 0
        self._sequence = 0
        self._tasks: list[asyncio.Task] = []
        self._send_lock = asyncio.Lock()
        self._socket: Any = None

    # ---- the call -----------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._socket = await websockets.connect(self.url, additional_headers=self.headers)
        await self._send({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        await self._send({"event": "start", "start": {
            "streamSid": self.stream_sid, "accountSid": "AC00000000000000000000000000000001",
            "callSid": self.call_sid, "tracks": ["inbound"], "customParameters": self.parameters,
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}},
            "streamSid": self.stream_sid})
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._microphone()), loop.create_task(self._receive()),
                       loop.create_task(self._loudspeaker())]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._socket.close()

    def say(self, mulaw_8k: bytes) -> None:
        """The caller talks: these frames replace the silence, in real time."""
        self._speech.extend(mulaw_8k[i : i + FRAME_BYTES].ljust(FRAME_BYTES, b"\xff")
                            for i in range(0, len(mulaw_8k), FRAME_BYTES))

    async def press(self, digit: str) -> None:
        await self._send({"event": "dtmf", "streamSid": self.stream_sid, "dtmf": {"track": "inbound_track",
                                                                               "digit": digit}})

    async def hang_up(self, timeout: float = 30) -> None:
        """Twilio's ``stop``, then the server ends the session and closes the socket."""
        self._tasks[0].cancel()  # the microphone goes with the call
        await self._send({"event": "stop", "stop": {"accountSid": "AC00000000000000000000000000000001",
                                                    "callSid": self.call_sid}, "streamSid": self.stream_sid})
        await asyncio.wait_for(self.closed.wait(), timeout)

    async def until(self, condition: Callable[[Heard], bool], timeout: float = 120) -> Heard:
        """Wait until ``condition`` holds for what has been heard (checked on every change)."""
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: condition(self.heard)), timeout)
        return self.heard

    # ---- the wire -----------------------------------------------------------------------

    async def _send(self, message: dict[str, Any]) -> None:
        async with self._send_lock:
            self._sequence += 1
            if message["event"] != "connected":
                message = {**message, "sequenceNumber": str(self._sequence)}
            with contextlib.suppress(websockets.ConnectionClosed):
                await self._socket.send(json.dumps(message))

    async def _microphone(self) -> None:
        """One frame every 20 ms of wall clock, on a fixed schedule (no drift)."""
        start, chunk = time.monotonic(), 0
        while True:
            frame = self._speech.popleft() if self._speech else SILENCE
            chunk += 1
            await self._send({"event": "media", "streamSid": self.stream_sid, "media": {
                "track": "inbound", "chunk": str(chunk), "timestamp": str(int(chunk * FRAME_S * 1000)),
                "payload": base64.b64encode(frame).decode()}})
            await asyncio.sleep(max(0.0, start + chunk * FRAME_S - time.monotonic()))

    async def _receive(self) -> None:
        try:
            async for raw in self._socket:
                message = json.loads(raw)
                assert message.get("streamSid") == self.stream_sid, message
                self.heard.add(message)
                if message["event"] == "media":
                    audio = base64.b64decode(message["media"]["payload"])
                    self._buffer += audio
                    self._received_bytes += len(audio)
                elif message["event"] == "mark":
                    self._marks.append((self._received_bytes, message["mark"]["name"]))
                elif message["event"] == "clear":
                    self._buffer.clear()
                    for name in self._played_to(self._received_bytes, dropped=True):
                        await self._echo(name)
                else:
                    raise AssertionError(f"Twilio would end the call on {message}")
                await self._echo_played()
                await self._notify()
        except websockets.ConnectionClosed:
            pass
        finally:
            self.closed.set()
            await self._notify()

    async def _loudspeaker(self) -> None:
        """Plays 20 ms every 20 ms; after a silence, playback restarts ``jitter_ms`` late."""
        playing_since: float | None = None
        frames = 0
        while True:
            if not self._buffer:
                playing_since = None
                await asyncio.sleep(FRAME_S)
                continue
            if playing_since is None:
                await asyncio.sleep(self.jitter_s)
                playing_since, frames = time.monotonic(), 0
            played = bytes(self._buffer[:FRAME_BYTES])
            del self._buffer[: len(played)]
            self.heard.played_bytes += len(played)
            frames += 1
            await self._echo_played()
            await self._notify()
            await asyncio.sleep(max(0.0, playing_since + frames * FRAME_S - time.monotonic()))

    def _played_to(self, position: int, *, dropped: bool) -> list[str]:
        names = []
        while self._marks and self._marks[0][0] <= position:
            names.append(self._marks.popleft()[1])
        (self.heard.dropped if dropped else self.heard.echoed).extend(names)
        return names

    async def _echo_played(self) -> None:
        """Marks whose audio has all been played (or that came with nothing left to play)."""
        for name in self._played_to(self._received_bytes - len(self._buffer), dropped=False):
            await self._echo(name)

    async def _echo(self, name: str) -> None:
        await self._send({"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}})

    async def _notify(self) -> None:
        self.heard.buffered_bytes = len(self._buffer)
        async with self._changed:
            self._changed.notify_all()
