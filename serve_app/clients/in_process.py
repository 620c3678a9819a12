"""Model services run in this process: the deployments' own code without the Ray hop.

Used by the engine tests and tools that want real models without a Ray cluster. Same contract
as ServeModels: errors become ServiceError, closing a stream stops the model's work.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator

import numpy as np

from deployments.llm import ChatRequest, LanguageModel, LlmEvent, LlmOptions
from deployments.stt import SttOptions, Transcription, WhisperTranscriber
from deployments.tts import SynthesisRequest, TextToSpeech, TtsOptions
from deployments.vad import SileroVad, VadOptions, VadRequest, VadResult
from deployments.vision import ImageDescriber, VisionOptions
from serve_app.clients.errors import as_service_error, guarded_stream


class InProcessModels:
    def __init__(self, *, vad: VadOptions | None = None, stt: SttOptions | None = None,
                 llm: LlmOptions | None = None, tts: TtsOptions | None = None,
                 vision: VisionOptions | None = None, timeout_s: float = 60.0) -> None:
        self.vad = SileroVad(vad or VadOptions())
        self.stt = WhisperTranscriber(stt or SttOptions())
        self.llm = LanguageModel.func_or_class(llm or LlmOptions())
        self.tts = TextToSpeech.func_or_class(tts or TtsOptions())
        self.vision = ImageDescriber.func_or_class(vision or VisionOptions())
        self.timeout_s = timeout_s

    def with_llm(self, options: LlmOptions) -> InProcessModels:
        """The same loaded models with another LLM backend (e.g. an Ollama server)."""
        other = copy.copy(self)
        other.llm = LanguageModel.func_or_class(options)
        return other

    def with_vad(self, options: VadOptions) -> InProcessModels:
        """The same loaded models with another VAD model."""
        other = copy.copy(self)
        other.vad = SileroVad(options)
        return other

    def with_stt(self, options: SttOptions) -> InProcessModels:
        """The same loaded models with another STT configuration."""
        other = copy.copy(self)
        other.stt = WhisperTranscriber(options)
        return other

    def with_tts(self, options: TtsOptions) -> InProcessModels:
        """The same loaded models with another TTS voice or backend."""
        other = copy.copy(self)
        other.tts = TextToSpeech.func_or_class(options)
        return other

    async def _unary(self, phase: str, awaitable):
        try:
            return await asyncio.wait_for(awaitable, self.timeout_s)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            raise as_service_error(phase, error) from error

    async def detect_speech(self, request: VadRequest) -> VadResult:
        return await self._unary("vad", asyncio.to_thread(self.vad.run, request))

    async def transcribe(self, pcm16k: np.ndarray) -> Transcription:
        results = await self._unary("stt", asyncio.to_thread(self.stt.transcribe_batch, [pcm16k]))
        return results[0]

    async def describe_image(self, image: bytes, prompt: str | None) -> str:
        return await self._unary("vision", self.vision.describe(image, prompt))

    def _stream(self, phase: str, generator) -> AsyncIterator:
        return guarded_stream(phase, generator, self.timeout_s, generator.aclose)

    def chat(self, request: ChatRequest) -> AsyncIterator[LlmEvent]:
        return self._stream("llm", self.llm.chat(request))

    async def prefill(self, request: ChatRequest) -> int:
        return await self._unary("llm", self.llm.prefill(request))

    def synthesize(self, request: SynthesisRequest) -> AsyncIterator[bytes]:
        return self._stream("tts", self.tts.synthesize(request))
