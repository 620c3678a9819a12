"""The checks behind ``LimitsOptions``: what one input may be, in the engine's words.

Each returns nothing when the input fits and raises ``LimitExceeded`` (a message and the error code
clients match on) when it does not. The engine uses them for the native commands; the OpenAI adapter
uses the same ones before it changes its own session state, and turns them into OpenAI errors.
"""

from __future__ import annotations

import io
import json
from typing import Any

from PIL import Image, UnidentifiedImageError

from serve_app.session.options import LimitsOptions


class LimitExceeded(ValueError):
    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.message, self.code = message, code


def check_instructions(text: str | None, limits: LimitsOptions) -> None:
    if text and len(text) > limits.instructions_chars:
        raise LimitExceeded(f"instructions of {len(text)} characters are over the {limits.instructions_chars} "
                            "character limit", "instructions_too_long")


def check_tools(tools: list[Any] | None, limits: LimitsOptions) -> None:
    """Each tool is compiled to a grammar for every response that offers it, so both count and size are bounded."""
    if not tools:
        return
    if len(tools) > limits.tools:
        raise LimitExceeded(f"{len(tools)} tools are more than the {limits.tools} a session may declare",
                            "too_many_tools")
    size = len(json.dumps(tools, default=str))
    if size > limits.tools_bytes:
        raise LimitExceeded(f"the tools' JSON is {size} bytes, over the {limits.tools_bytes} byte limit",
                            "tools_too_large")


def check_text(text: str | None, limits: LimitsOptions, what: str) -> None:
    if text and len(text) > limits.text_chars:
        raise LimitExceeded(f"{what} of {len(text)} characters is over the {limits.text_chars} character limit",
                            "text_too_long")


def check_value(value: Any, limits: LimitsOptions, what: str) -> None:
    """A JSON value (a tool's result), measured as the JSON it becomes in the context."""
    check_text(value if isinstance(value, str) else json.dumps(value, default=str), limits, what)


def check_image_pixels(data: bytes, limits: LimitsOptions) -> None:
    """Reads only the header: a small file can declare a huge image (a decompression bomb)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except (UnidentifiedImageError, OSError, ValueError):
        return  # not an image Pillow knows: the vision service says what is wrong with it
    except Image.DecompressionBombError:
        width, height = limits.image_pixels + 1, 1
    if width * height > limits.image_pixels:
        raise LimitExceeded(f"an image of {width}x{height} pixels is over the {limits.image_pixels} pixel limit",
                            "image_too_many_pixels")
