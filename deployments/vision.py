"""Vision: turns an image the user shared into text a voice assistant can speak about.

Backends: ``ocr`` (embedded; RapidOCR plus image facts), ``ollama`` (a vision model on an Ollama
server) and ``transformers`` (a local Hugging Face VLM). Every request is decoded and checked by
``decode_image`` first, so bad uploads fail as ``ModelInputError`` and the replica keeps serving.
"""

from __future__ import annotations

import asyncio
from typing import Literal, Protocol

from pydantic import BaseModel, Field
from ray import serve

from deployments.errors import ModelInputError
from deployments.vision_image import DecodedImage, ImageFacts, Observation, decode_image, image_facts


class VisionOptions(BaseModel):
    backend: Literal["ocr", "ollama", "transformers"] = Field(
        "ocr", description="'ocr' = embedded RapidOCR + image facts (CPU); 'ollama' / 'transformers' = a VLM"
    )
    # ocr
    ocr_detection_side: int = Field(
        960,
        ge=64,
        description="long side the OCR text detector scales images down to; larger reads smaller text",
    )
    # ollama
    host: str = Field("http://127.0.0.1:11434", description="Ollama server URL")
    model: str = Field("llava", description="Ollama vision model, e.g. llava, llama3.2-vision, moondream")
    timeout_s: float = Field(60.0, gt=0, description="longest wait for one Ollama reply")
    # transformers
    model_path: str | None = Field(
        None, description="local folder of a Hugging Face image-text-to-text model"
    )
    device: str = Field(
        "cpu", description="torch device for the transformers backend, e.g. cpu, cuda, cuda:1"
    )
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    max_new_tokens: int = Field(96, ge=1, le=2048, description="longest description the VLM may write")
    # all backends
    cpu_threads: int | None = Field(
        None, ge=1, description="threads for OCR / torch on CPU; None = library default"
    )
    max_image_bytes: int = Field(10 * 2**20, gt=0, description="largest accepted upload, in bytes")
    max_pixels: int = Field(
        50_000_000, gt=0, description="largest accepted width × height (decompression bombs)"
    )


class ImageAnalysis(ImageFacts):
    ocr_text: str | None = Field(
        None, description="text read by OCR, one line per row; None if OCR did not run"
    )
    description: str = Field(description="what the assistant is told about the image")


class VisionBackend(Protocol):
    async def see(self, image: DecodedImage, facts: ImageFacts, prompt: str | None) -> Observation: ...


def build_backend(options: VisionOptions) -> VisionBackend:
    if options.backend == "ollama":
        from deployments.vision_ollama import OllamaBackend

        return OllamaBackend(options.host, options.model, options.timeout_s)
    if options.backend == "transformers":
        from deployments.vision_transformers import TransformersBackend

        if not options.model_path:
            raise ValueError("the transformers vision backend needs model_path (a local model folder)")
        return TransformersBackend(
            options.model_path, options.device, options.dtype, options.max_new_tokens, options.cpu_threads
        )
    from deployments.vision_ocr import OcrBackend

    return OcrBackend(options.ocr_detection_side, options.cpu_threads)


@serve.deployment(name="Vision", max_ongoing_requests=8)
class ImageDescriber:
    """Serve face of the chosen vision backend."""

    def __init__(self, options: dict | VisionOptions | None = None) -> None:
        self.options = VisionOptions.model_validate(options or {})
        self.backend = build_backend(self.options)

    async def analyse(self, image: bytes, prompt: str | None = None) -> ImageAnalysis:
        """Facts about a PNG/JPEG/WebP/GIF image plus the backend's description (``prompt`` steers VLMs)."""
        if prompt is not None and not isinstance(prompt, str):
            raise ModelInputError(f"prompt must be text, got {type(prompt).__name__}", "invalid_prompt")
        decoded, facts = await asyncio.to_thread(self._decode, image)
        observation = await self.backend.see(decoded, facts, (prompt or "").strip() or None)
        return ImageAnalysis(
            **facts.model_dump(), ocr_text=observation.ocr_text, description=observation.description
        )

    async def describe(self, image: bytes, prompt: str | None = None) -> str:
        """Just the description: the text to put into the conversation as context."""
        return (await self.analyse(image, prompt)).description

    async def info(self) -> dict:
        model = {"ocr": "rapidocr PP-OCRv6", "ollama": self.options.model, "transformers": self.options.model_path}
        return {"backend": self.options.backend, "model": model[self.options.backend]}

    def _decode(self, image: bytes) -> tuple[DecodedImage, ImageFacts]:
        decoded = decode_image(image, self.options.max_image_bytes, self.options.max_pixels)
        return decoded, image_facts(decoded)
