"""The server events only a WebRTC call sends: its server-side output audio buffer's life.

Kept out of ``openai_realtime.server_events`` on purpose: that set is what a WebSocket may carry
(Pipecat's table), and these never travel over a WebSocket.
"""

from __future__ import annotations

from typing import Literal

from serve_app.protocols.openai_realtime.server_events import ServerEvent


class OutputAudioBufferStarted(ServerEvent):
    type: Literal["output_audio_buffer.started"] = "output_audio_buffer.started"
    response_id: str


class OutputAudioBufferStopped(ServerEvent):
    """The buffer has played out everything a finished response had (sent after its response.done)."""

    type: Literal["output_audio_buffer.stopped"] = "output_audio_buffer.stopped"
    response_id: str


class OutputAudioBufferCleared(ServerEvent):
    """Unplayed audio was dropped: a barge-in, a cancel, or the client's output_audio_buffer.clear."""

    type: Literal["output_audio_buffer.cleared"] = "output_audio_buffer.cleared"
    response_id: str
