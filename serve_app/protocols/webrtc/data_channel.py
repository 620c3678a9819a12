"""The ``oai-events`` data channel as the adapter's event transport (the same JSON as the WebSocket)."""

from __future__ import annotations

import asyncio
import json
import logging

from aiortc import RTCDataChannel

from serve_app.protocols.openai_realtime import server_events as se
from serve_app.protocols.openai_realtime.errors import ProtocolError

logger = logging.getLogger(__name__)

LABEL = "oai-events"
MAX_PENDING = 256  # client events read but not yet handled; a flooding client gets errors, not memory


class DataChannelTransport:
    def __init__(self, channel: RTCDataChannel) -> None:
        self.channel = channel
        self._inbox: asyncio.Queue[str | bytes | None] = asyncio.Queue(MAX_PENDING + 1)  # +1: the end marker
        channel.on("message", self._received)
        channel.on("close", self._closed)

    def _received(self, message: str | bytes) -> None:
        if self._inbox.qsize() >= MAX_PENDING:
            error = ProtocolError(f"more than {MAX_PENDING} events are waiting to be handled; this one was dropped",
                                  "rate_limit_exceeded")
            detail = se.ErrorDetail(type=error.kind, code=error.code, message=error.message)
            self._send(se.Error(error=detail).model_dump_json())
            return
        self._inbox.put_nowait(message)

    def _closed(self) -> None:
        while self._inbox.full():  # the end marker must get in
            self._inbox.get_nowait()
        self._inbox.put_nowait(None)

    async def receive(self) -> str | bytes | None:
        return await self._inbox.get()

    async def send_text(self, text: str) -> None:
        if self.channel.readyState != "open":
            raise ConnectionError("the oai-events data channel is closed")
        self._send(text)

    def _send(self, text: str) -> None:
        try:
            self.channel.send(text)
        except ValueError as error:  # over the peer's max-message-size: drop the event, keep the call
            logger.error("dropping a %s event: %s", json.loads(text).get("type"), error)

    async def close(self, code: int = 1000, reason: str = "") -> None:  # a data channel has no close code
        self.channel.close()
        self._closed()  # the reader ends now, whether or not the peer acknowledges the close
