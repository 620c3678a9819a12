"""The engine's view of the model services, and the one error type it handles from them.

Two implementations share this shape: ``ServeModels`` (Ray Serve handles, in the ingress) and
``InProcessModels`` (the same deployment code run in-process, for tests and tools). Either way
the engine sees ``ServiceError`` with the phase that failed and a code it can put on the wire.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

import numpy as np

from deployments.llm import ChatRequest, LlmEvent
from deployments.stt import Transcription
from deployments.tts import SynthesisRequest
from deployments.vad import VadRequest, VadResult


class ServiceError(Exception):
    """A model call failed: bad input (``code`` from the service) or the service is down/slow."""

    def __init__(self, phase: str, code: str, message: str) -> None:
        super().__init__(message)
        self.phase, self.code, self.message = phase, code, message


class ModelServices(Protocol):
    async def detect_speech(self, request: VadRequest) -> VadResult: ...

    async def transcribe(self, pcm16k: np.ndarray) -> Transcription: ...

    def chat(self, request: ChatRequest) -> AsyncIterator[LlmEvent]:
        """Streams events; closing the iterator early cancels the generation downstream."""
        ...

    async def prefill(self, request: ChatRequest) -> int:
        """Has the LLM read a prompt ahead of the turn that sends it; tokens read."""
        ...

    def synthesize(self, request: SynthesisRequest) -> AsyncIterator[bytes]:
        """Streams PCM16 chunks; closing the iterator early cancels the synthesis downstream."""
        ...

    async def describe_image(self, image: bytes, prompt: str | None) -> str: ...
