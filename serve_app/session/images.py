"""Images from the client: described by the vision service, then part of the conversation."""

from __future__ import annotations

from typing import Any

from deployments.llm import ChatMessage
from serve_app.clients.models import ServiceError
from serve_app.session.events import ImageIn, VisionResult
from serve_app.session.inbox import Described


class Images:
    """Part of Session (serve_app/session/engine.py); the state it uses is made in Session.__init__."""

    def _on_image(self, image: ImageIn) -> None:
        if len(image.data) > self.options.max_image_bytes:
            self.error(f"image of {len(image.data)} bytes is over the {self.options.max_image_bytes} byte limit",
                       "vision", "image_too_large", ref=image.message_id)
            return

        async def describe() -> None:
            try:
                result: Any = await self.services.describe_image(image.data, image.prompt)
            except ServiceError as error:
                result = error
            self.submit(Described(image.data, image.prompt, result, image.message_id))

        self._describing += 1
        self._spawn(describe())

    async def _on_described(self, message: Described) -> None:
        self._describing -= 1
        try:
            await self._add_description(message)
        finally:
            await self._start_queued()

    async def _add_description(self, message: Described) -> None:
        if isinstance(message.result, ServiceError):
            self.error(message.result.message, "vision", message.result.code, ref=message.message_id)
            return
        description = message.result
        await self.store.add_image(self.session_id, message.image, sniff_mime(message.image), message.prompt,
                                   description)
        note = f"The user shared an image. What it shows: {description}"
        await self.store.add_message(self.session_id, "system", note, turn_id=self.turn_id)
        self.context.add(ChatMessage(role="system", content=note), message.message_id)
        self.emit(VisionResult(description))


def sniff_mime(data: bytes) -> str:
    signatures = {b"\x89PNG": "image/png", b"\xff\xd8\xff": "image/jpeg", b"GIF8": "image/gif", b"RIFF": "image/webp"}
    return next((mime for magic, mime in signatures.items() if data.startswith(magic)), "application/octet-stream")
