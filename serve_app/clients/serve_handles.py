"""Model services behind Ray Serve handles, as the ingress calls them.

Cancelling the local task that awaits a handle call does not reach the replica (measured in
shared/notes/ray_serve.md), so every path that stops early calls ``.cancel()`` on the response.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import numpy as np
from ray.serve.handle import DeploymentHandle

from deployments.llm import ChatRequest, LlmEvent
from deployments.stt import Transcription
from deployments.tts import SynthesisRequest
from deployments.vad import SileroVad, VadRequest, VadResult
from serve_app.clients.errors import as_service_error, guarded_stream


class ServeModels:
    def __init__(self, *, vad: DeploymentHandle, stt: DeploymentHandle, llm: DeploymentHandle,
                 tts: DeploymentHandle, vision: DeploymentHandle, timeout_s: float,
                 local_vad: SileroVad | None = None) -> None:
        self.vad, self.stt, self.llm, self.tts, self.vision = vad, stt, llm, tts, vision
        self.timeout_s = timeout_s
        self.local_vad = local_vad  # vad_placement: ingress, the same model without the hop

    async def _unary(self, phase: str, response):
        try:
            return await asyncio.wait_for(response, self.timeout_s)
        except asyncio.CancelledError:
            response.cancel()
            raise
        except Exception as error:
            response.cancel()
            raise as_service_error(phase, error) from error

    async def detect_speech(self, request: VadRequest) -> VadResult:
        if self.local_vad is not None:
            try:
                return await asyncio.wait_for(asyncio.to_thread(self.local_vad.run, request), self.timeout_s)
            except Exception as error:
                raise as_service_error("vad", error) from error
        return await self._unary("vad", self.vad.detect.remote(request))

    async def transcribe(self, pcm16k: np.ndarray) -> Transcription:
        return await self._unary("stt", self.stt.transcribe.remote(pcm16k))

    async def describe_image(self, image: bytes, prompt: str | None) -> str:
        return await self._unary("vision", self.vision.describe.remote(image, prompt))

    def _stream(self, phase: str, generator) -> AsyncIterator:
        # generator.cancel() is a no-op once finished; it stops the replica's work when we stop early
        return guarded_stream(phase, generator, self.timeout_s, generator.cancel)

    def chat(self, request: ChatRequest) -> AsyncIterator[LlmEvent]:
        return self._stream("llm", self.llm.options(stream=True).chat.remote(request))

    async def prefill(self, request: ChatRequest) -> int:
        return await self._unary("llm", self.llm.prefill.remote(request))

    def synthesize(self, request: SynthesisRequest) -> AsyncIterator[bytes]:
        return self._stream("tts", self.tts.options(stream=True).synthesize.remote(request))
