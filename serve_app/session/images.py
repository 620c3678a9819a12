"""Images from the client: described by the vision service, then part of the conversation.

A response requested meanwhile waits for the description (``describing``), so the model answers
with the picture in mind.
"""

from __future__ import annotations

import logging
from typing import Any

from serve_app.clients.models import ModelServices, ServiceError
from serve_app.session.channel import SessionChannel
from serve_app.session.conversation import Conversation
from serve_app.session.events import ImageIn, VisionResult
from serve_app.session.inbox import Described
from serve_app.session.limits import LimitExceeded, check_image_pixels, check_text
from serve_app.session.options import LimitsOptions

logger = logging.getLogger(__name__)


class Images:
    def __init__(self, channel: SessionChannel, conversation: Conversation, services: ModelServices,
                 max_bytes: int, limits: LimitsOptions | None = None) -> None:
        self.channel, self.conversation, self.services = channel, conversation, services
        self.max_bytes = max_bytes
        self.limits = limits or LimitsOptions()
        self.describing = 0  # images sent to the vision service and not back yet

    def on_image(self, image: ImageIn) -> None:
        if len(image.data) > self.max_bytes:
            self.channel.error(f"image of {len(image.data)} bytes is over the {self.max_bytes} byte limit",
                               "vision", "image_too_large", ref=image.message_id)
            return
        if self.describing >= self.limits.images_in_flight:
            self.channel.error(f"{self.describing} images are being described already; send this one when one "
                               "of them is back", "vision", "too_many_images", ref=image.message_id)
            return
        try:
            check_image_pixels(image.data, self.limits)
            check_text(image.prompt, self.limits, "an image's prompt")
        except LimitExceeded as error:
            self.channel.error(error.message, "vision", error.code, ref=image.message_id)
            return

        async def describe() -> None:
            try:
                result: Any = await self.services.describe_image(image.data, image.prompt)
            except ServiceError as error:
                result = error
            except Exception as error:  # the description must come back, or a waiting response never starts
                logger.error("describing an image failed", exc_info=error)
                result = ServiceError("vision", "internal_error", f"describing the image failed "
                                      f"({type(error).__name__}: {error})"[:300])
            self.channel.submit(Described(image.data, image.prompt, result, image.message_id))

        self.describing += 1
        self.channel.spawn(describe())

    async def on_described(self, message: Described) -> None:
        self.describing -= 1
        if isinstance(message.result, ServiceError):
            self.channel.error(message.result.message, "vision", message.result.code, ref=message.message_id)
            return
        description = message.result
        await self.conversation.add_image(message.image, sniff_mime(message.image), message.prompt, description)
        await self.conversation.add("system", f"The user shared an image. What it shows: {description}",
                                    message.message_id)
        self.channel.emit(VisionResult(description))


def sniff_mime(data: bytes) -> str:
    signatures = {b"\x89PNG": "image/png", b"\xff\xd8\xff": "image/jpeg", b"GIF8": "image/gif", b"RIFF": "image/webp"}
    return next((mime for magic, mime in signatures.items() if data.startswith(magic)), "application/octet-stream")
