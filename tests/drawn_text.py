"""Pictures of text, drawn in the test, for the OCR-backed vision service to read."""

from __future__ import annotations

import io

from PIL import Image, ImageDraw, ImageFont


def text_png(text: str, size: tuple[int, int] = (640, 200), at: tuple[int, int] = (30, 60),
             font_size: int = 64) -> bytes:
    """Black text on white, as PNG bytes."""
    image = Image.new("RGB", size, "white")
    ImageDraw.Draw(image).text(at, text, fill="black", font=ImageFont.load_default(size=font_size))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
