"""Where the adapter's JSON events travel: a WebSocket, or a WebRTC call's ``oai-events`` data channel.

The adapter reads and writes text frames through this seam and never asks which one it has, so
both transports carry exactly the same events.
"""

from __future__ import annotations

from typing import Protocol

from starlette.websockets import WebSocket, WebSocketDisconnect

from serve_app.protocols.ending import close_socket


class EventTransport(Protocol):
    async def receive(self) -> str | bytes | None:
        """The next client frame (text, or bytes to be refused); None once the peer has gone."""

    async def send_text(self, text: str) -> None:
        """One server event; raises when the peer has gone."""

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """End the transport from our side (a WebSocket with ``code`` and ``reason``); a no-op when the
        peer already left."""


class WebSocketTransport:
    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket

    async def receive(self) -> str | bytes | None:
        try:
            message = await self.websocket.receive()
        except WebSocketDisconnect:
            return None
        if message["type"] == "websocket.disconnect":
            return None
        return message["text"] if message.get("text") is not None else message.get("bytes") or b""

    async def send_text(self, text: str) -> None:
        await self.websocket.send_text(text)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await close_socket(self.websocket, code, reason)


class Playback(Protocol):
    """Response audio played out by the server (WebRTC), instead of sent as ``output_audio.delta`` events.

    ``outgoing`` sees every batch of server events before it is sent, takes the audio deltas out
    (into its media track) and adds the ``output_audio_buffer.*`` events; ``clear`` drops what is
    still unplayed (``output_audio_buffer.clear``).
    """

    def outgoing(self, events: list) -> list: ...

    def clear(self) -> list: ...
