"""Turning untrusted image bytes into a checked RGB picture, and the facts anyone can read off it.

Every backend sees images only through ``decode_image``, so size limits and format checks happen
once, before any model runs, and a bad upload fails as a ``ModelInputError`` instead of a crash.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from pydantic import BaseModel, Field

from deployments.errors import ModelInputError

ACCEPTED_FORMATS = ("PNG", "JPEG", "WEBP", "GIF")
FORMAT_NAMES = {"PNG": "PNG", "JPEG": "JPEG", "WEBP": "WebP", "GIF": "GIF"}


@dataclass(frozen=True)
class DecodedImage:
    """An accepted image: the original bytes, its format, and the (first) frame as opaque RGB."""

    data: bytes
    format: str
    picture: Image.Image
    frames: int = 1

    @property
    def width(self) -> int:
        return self.picture.width

    @property
    def height(self) -> int:
        return self.picture.height

    def encoded_for_models(self) -> bytes:
        """PNG or JPEG bytes, which every vision model server reads; other formats are re-encoded."""
        if self.format in ("PNG", "JPEG"):
            return self.data
        buffer = io.BytesIO()
        self.picture.save(buffer, format="PNG")
        return buffer.getvalue()


def decode_image(data: bytes, max_bytes: int, max_pixels: int) -> DecodedImage:
    """Check and decode one upload; raises ``ModelInputError`` with a code for anything unusable."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ModelInputError(f"expected image bytes, got {type(data).__name__}", "not_an_image")
    data = bytes(data)
    if not data:
        raise ModelInputError("the image is empty (0 bytes)", "empty_image")
    if len(data) > max_bytes:
        raise ModelInputError(
            f"the image is {len(data) / 2**20:.1f} MiB; the limit is {max_bytes / 2**20:.1f} MiB",
            "image_too_large",
        )
    try:
        source = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except UnidentifiedImageError:
        raise ModelInputError("the data is not a PNG, JPEG, WebP or GIF image", "not_an_image") from None
    except Image.DecompressionBombError:
        raise ModelInputError("the image has too many pixels to decode safely", "image_too_large") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise ModelInputError(f"the image header is corrupt: {error}", "not_an_image") from None
    width, height = source.size
    if width * height > max_pixels:
        raise ModelInputError(
            f"the image is {width}×{height} pixels; the limit is {max_pixels:,} pixels", "image_too_large"
        )
    try:
        frames = getattr(source, "n_frames", 1)
        source.seek(0)
        picture = _opaque_rgb(ImageOps.exif_transpose(source))
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise ModelInputError(
            f"the image could not be decoded (truncated or corrupt): {error}", "not_an_image"
        ) from None
    return DecodedImage(data=data, format=source.format, picture=picture, frames=frames)


def _opaque_rgb(image: Image.Image) -> Image.Image:
    """RGB with transparency flattened onto white, as the picture would look on a page."""
    if image.mode in ("RGBA", "LA", "P", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        page = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(page, rgba).convert("RGB")
    return image.convert("RGB")


class DominantColour(BaseModel):
    name: str = Field(description="nearest name from a small everyday palette, e.g. 'dark blue'")
    hex: str = Field(description="the measured colour, '#rrggbb'")
    share: float = Field(description="fraction of the picture's area, 0..1")


class ImageFacts(BaseModel):
    """What can be said about an image without any model."""

    width: int
    height: int
    format: str = Field(description="PNG, JPEG, WebP or GIF")
    frames: int = Field(1, description="animation frames; only the first is analysed")
    dominant_colours: list[DominantColour] = []


# Everyday colour names a listener understands; the nearest one (in CIELAB) names a measured colour.
PALETTE: dict[str, tuple[int, int, int]] = {
    "white": (255, 255, 255),
    "light grey": (200, 200, 200),
    "grey": (128, 128, 128),
    "dark grey": (64, 64, 64),
    "black": (0, 0, 0),
    "red": (220, 30, 30),
    "dark red": (128, 0, 0),
    "pink": (255, 160, 190),
    "orange": (255, 140, 0),
    "brown": (120, 70, 20),
    "beige": (235, 220, 180),
    "yellow": (255, 220, 0),
    "light green": (144, 238, 144),
    "green": (40, 160, 40),
    "dark green": (0, 90, 0),
    "teal": (0, 128, 128),
    "light blue": (150, 200, 240),
    "blue": (30, 80, 220),
    "dark blue": (0, 0, 128),
    "purple": (128, 0, 128),
}


def _lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB (…, 3) in 0..255 to CIELAB (D65)."""
    c = rgb / 255.0
    linear = np.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)
    xyz = linear @ np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]).T
    xyz = xyz / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > 216 / 24389, np.cbrt(xyz), (24389 / 27 * xyz + 16) / 116)
    return np.stack(
        [116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], axis=-1
    )


_PALETTE_NAMES = list(PALETTE)
_PALETTE_LAB = _lab(np.array(list(PALETTE.values()), dtype=float))


def colour_name(rgb: tuple[int, int, int]) -> str:
    distances = np.linalg.norm(_PALETTE_LAB - _lab(np.array(rgb, dtype=float)), axis=1)
    return _PALETTE_NAMES[int(np.argmin(distances))]


def dominant_colours(
    picture: Image.Image, clusters: int = 8, min_share: float = 0.03
) -> list[DominantColour]:
    """Median-cut a thumbnail, name each cluster, merge clusters sharing a name; largest share first."""
    thumbnail = picture.copy()
    thumbnail.thumbnail((128, 128))
    quantized = thumbnail.quantize(colors=clusters, method=Image.Quantize.MEDIANCUT)
    palette = quantized.getpalette() or []
    total = thumbnail.width * thumbnail.height
    by_name: dict[str, list[tuple[int, tuple[int, int, int]]]] = {}
    for count, index in quantized.getcolors(clusters) or []:
        rgb = tuple(palette[3 * index : 3 * index + 3])
        by_name.setdefault(colour_name(rgb), []).append((count, rgb))
    colours = []
    for name, members in by_name.items():
        count = sum(c for c, _ in members)
        mean = np.average(
            np.array([rgb for _, rgb in members], dtype=float), axis=0, weights=[c for c, _ in members]
        )
        hex_value = "#" + "".join(f"{round(v):02x}" for v in mean)
        colours.append(DominantColour(name=name, hex=hex_value, share=round(count / total, 3)))
    colours.sort(key=lambda colour: colour.share, reverse=True)
    return [colour for colour in colours if colour.share >= min_share]


# What the generative backends ask when the caller gives no prompt.
DEFAULT_PROMPT = (
    "Describe this image in two or three plain sentences for a voice assistant that cannot see it. "
    "If it contains text, quote the text."
)


class Observation(NamedTuple):
    """What a backend made of an image: the description, and the OCR text when it ran OCR."""

    description: str
    ocr_text: str | None = None


def image_facts(image: DecodedImage) -> ImageFacts:
    return ImageFacts(
        width=image.width,
        height=image.height,
        format=FORMAT_NAMES.get(image.format, image.format),
        frames=image.frames,
        dominant_colours=dominant_colours(image.picture),
    )
