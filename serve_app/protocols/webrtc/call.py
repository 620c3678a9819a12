"""One WebRTC call: a peer connection, its ``oai-events`` data channel, audio both ways, one adapter.

The data channel is the adapter's transport (the same events as ``GET /v1/realtime``); the
microphone track feeds the engine like ``input_audio_buffer.append`` does; replies play on the
reply track through ServerPlayback. The call ends when the client closes the channel or the
peer connection, on hang-up, or when the channel never opens.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from serve_app.protocols.openai_realtime.adapter import RealtimeAdapter
from serve_app.protocols.openai_realtime.audio import SAMPLE_RATE
from serve_app.protocols.openai_realtime.handshake import Handshake
from serve_app.protocols.openai_realtime.session_config import updated
from serve_app.protocols.webrtc.data_channel import LABEL, DataChannelTransport
from serve_app.protocols.webrtc.media import Resampler
from serve_app.protocols.webrtc.options import WebRtcOptions
from serve_app.protocols.webrtc.playback import ServerPlayback
from serve_app.session import events as ev
from serve_app.session.engine import Session

logger = logging.getLogger(__name__)

SESSION_END_S = 15.0  # how long a hang-up waits for the session to store its last turn


def rtc_configuration(options: WebRtcOptions) -> RTCConfiguration:
    servers = [RTCIceServer(urls=s.urls, username=s.username, credential=s.credential) for s in options.ice_servers]
    return RTCConfiguration(iceServers=servers)


class RealtimeCall:
    def __init__(self, call_id: str, session: Session, options: WebRtcOptions, model: str,
                 config: dict[str, Any] | None, on_end: Callable[[RealtimeCall], None]) -> None:
        self.id, self.options, self.on_end = call_id, options, on_end
        self.pc = RTCPeerConnection(rtc_configuration(options))
        self.playback = ServerPlayback(output_format=lambda: self.adapter.realtime.audio.output.format.type,
                                       truncate=self._truncate)
        handshake = Handshake(beta=False, api_key=None, subprotocol=None, model=model, call_id=call_id)
        # its transport is the client's data channel, set when that arrives (before the adapter runs)
        self.adapter = RealtimeAdapter(None, session, handshake, playback=self.playback)
        if config:
            self.adapter.realtime = updated(self.adapter.realtime, config)
        self.playback.send = self.adapter.send
        self._opened = asyncio.Event()
        self._running = False
        self._tasks: set[asyncio.Task] = set()
        self._session_task: asyncio.Task | None = None
        self._ending: asyncio.Task | None = None
        self.pc.addTrack(self.playback.track)
        self.pc.on("datachannel", self._on_datachannel)
        self.pc.on("track", self._on_track)
        self.pc.on("connectionstatechange", self._on_connection_state)

    async def answer(self, offer_sdp: str) -> str:
        """Apply the offer, gather our host candidates (no trickle ICE over HTTP), return the answer."""
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        self._spawn(self._watch_opening())
        return self.pc.localDescription.sdp

    # ---- the peer's events ----------------------------------------------------------

    def _on_datachannel(self, channel) -> None:
        if channel.label != LABEL or self.adapter.transport is not None:
            logger.warning("call %s: ignoring data channel %r", self.id, channel.label)
            return
        self.adapter.transport = DataChannelTransport(channel)
        if channel.readyState == "open":
            self._open()
        else:
            channel.on("open", self._open)

    def _open(self) -> None:
        if not self._opened.is_set():
            self._opened.set()
            self._running = True
            self._session_task = self._spawn(self._run())

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio":
            self._spawn(self._listen(track))

    async def _on_connection_state(self) -> None:
        if self.pc.connectionState in ("failed", "closed"):
            await self.hang_up()

    # ---- the call's work ------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            await self.adapter.run()  # until the channel closes; the session is stored as it ends
        finally:
            self._running = False
            self._spawn(self.hang_up())  # not awaited: the hang-up waits for this task to finish

    async def _listen(self, track: MediaStreamTrack) -> None:
        """Microphone frames -> PCM16 at the session's input rate -> the engine (once the session runs)."""
        resampler: Resampler | None = None
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            if not self._running:
                continue  # audio from before the session started has no conversation to go to
            rate = SAMPLE_RATE[self.adapter.realtime.audio.input.format.type]
            if resampler is None or resampler.rate != rate:
                resampler = Resampler(rate)
            pcm = resampler.frame(frame)
            if pcm:
                self.adapter.audio_in(pcm, len(pcm) / 2 / rate * 1000)

    async def _watch_opening(self) -> None:
        try:
            await asyncio.wait_for(self._opened.wait(), self.options.connect_timeout_s)
        except TimeoutError:
            logger.warning("call %s: the data channel did not open in %.0f s", self.id, self.options.connect_timeout_s)
            await self.hang_up()

    def _truncate(self, item_id: str, heard_ms: int) -> None:
        entry = self.adapter.conversation.get(item_id)
        if entry is not None:
            self.adapter.session.submit(ev.TruncateReply(entry.engine_ref, heard_ms))

    def _spawn(self, coroutine) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)  # held until done: a task nobody references may be collected mid-way
        task.add_done_callback(self._tasks.discard)
        return task

    # ---- the end ----------------------------------------------------------------------------

    async def hang_up(self) -> None:
        """End the call (idempotent; whoever asks first): the session ends and stores what was said."""
        if self._ending is None:
            self._ending = asyncio.get_running_loop().create_task(self._end())
        await asyncio.shield(self._ending)

    async def _end(self) -> None:
        if self._running:
            await self.adapter.transport.close()  # the adapter's reader sees the end and finishes the session
        if self._session_task is not None:
            await asyncio.wait({self._session_task}, timeout=SESSION_END_S)
        self.playback.close()
        await self.pc.close()
        self.on_end(self)
