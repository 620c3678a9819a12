"""Server-side playout of a call's replies: what OpenAI does over WebRTC instead of audio deltas.

Over WebRTC the data channel carries no ``response.output_audio.delta``: the reply is played on
the media track, and the client learns of it from ``output_audio_buffer.started`` (first audio of
a response), ``.stopped`` (all of it played, after ``response.done``) and ``.cleared`` (unplayed
audio dropped). Because the server plays the audio it also knows what was heard, so a reply cut
off is truncated to the played position by the server itself (``conversation.item.truncated``),
with no ``conversation.item.truncate`` needed from the client.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Awaitable, Callable

from serve_app.protocols.openai_realtime import server_events as se
from serve_app.protocols.openai_realtime.audio import SAMPLE_RATE, to_pcm16
from serve_app.protocols.webrtc.events import (
    OutputAudioBufferCleared,
    OutputAudioBufferStarted,
    OutputAudioBufferStopped,
)
from serve_app.protocols.webrtc.media import RTC_RATE, ReplyTrack, Resampler, Segment

logger = logging.getLogger(__name__)


class ServerPlayback:
    """The adapter's Playback for a call: deltas -> the reply track, buffer events -> the data channel."""

    def __init__(self, output_format: Callable[[], str], truncate: Callable[[str, int], None]) -> None:
        self.output_format = output_format  # the session's output audio format, read per delta
        self.truncate = truncate  # (item id, heard ms): cut a reply to what was played
        self.send: Callable[..., Awaitable[None]] | None = None  # the adapter's send, for .stopped
        self.track = ReplyTrack(on_drained=self._drained)
        self._resampler = Resampler(RTC_RATE)
        self._tasks: set[asyncio.Task] = set()

    def outgoing(self, events: list[se.ServerEvent]) -> list[se.ServerEvent]:
        out: list[se.ServerEvent] = []
        for event in events:
            if isinstance(event, se.OutputAudioDelta):
                fmt = self.output_format()
                pcm = to_pcm16(base64.b64decode(event.delta), fmt)
                if self.track.write(event.response_id, event.item_id, self._resampler.pcm(pcm, SAMPLE_RATE[fmt])):
                    out.append(OutputAudioBufferStarted(response_id=event.response_id))
            elif isinstance(event, se.ResponseDone) and event.response["status"] == "cancelled":
                out[:0] = self._cut(self.track.take(event.response["id"]))  # cleared first, as OpenAI orders it
                out.append(event)
            elif isinstance(event, se.ResponseDone):
                out.append(event)
                if (played := self.track.end(event.response["id"])) is not None:
                    out.append(OutputAudioBufferStopped(response_id=played.response_id))
            else:
                out.append(event)
        return out

    def clear(self) -> list[se.ServerEvent]:
        return self._cut(self.track.take())

    def _cut(self, segments: list[Segment]) -> list[se.ServerEvent]:
        for segment in segments:
            self.truncate(segment.item_id, segment.played_ms)
        return [OutputAudioBufferCleared(response_id=s.response_id) for s in segments]

    def _drained(self, segment: Segment) -> None:
        if self.send is None:
            return
        task = asyncio.get_running_loop().create_task(self.send(OutputAudioBufferStopped(response_id=segment.response_id)))
        self._tasks.add(task)  # held until done: a task nobody references may be collected mid-way
        task.add_done_callback(self._tasks.discard)

    def close(self) -> None:
        self.track.stop()
        for task in self._tasks:
            task.cancel()
