"""Faults injected at the model boundary: the real in-process models, with one step made to fail.

Model clients turn what a service raises into ``ServiceError``; what these inject is anything else
(a client library's bug, an error type nobody mapped), which the engine must survive as well. A
step can also be slowed (a busy STT or vision replica), and the LLM can be made to return a given
tool call first, as an OpenAI-compatible server would (ids included: some reuse them).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from deployments.llm import ChatDone, ChatRequest, LlmEvent, TextDelta, ToolCall, ToolCallEvent
from deployments.tts import SynthesisRequest


class InjectedFault(RuntimeError):
    """Not a ServiceError: what an unmapped failure inside a model client looks like to the engine."""


class FaultyModels:
    def __init__(self, models: Any) -> None:
        self.models = models
        self.fail: set[str] = set()  # steps that raise once: stt, llm, tts, vision
        self.delay_s: dict[str, float] = {}  # steps slowed down, per call
        self.tool_calls: deque[ToolCall] = deque()  # one per turn, as its first round's reply

    def _trip(self, step: str) -> None:
        if step in self.fail:
            self.fail.discard(step)
            raise InjectedFault(f"injected {step} fault")

    async def _slow(self, step: str) -> None:
        if step in self.delay_s:
            await asyncio.sleep(self.delay_s[step])  # a busy replica, not a synchronisation

    async def detect_speech(self, request):
        return await self.models.detect_speech(request)

    async def transcribe(self, pcm16k):
        await self._slow("stt")
        self._trip("stt")
        return await self.models.transcribe(pcm16k)

    async def describe_image(self, image: bytes, prompt: str | None) -> str:
        await self._slow("vision")
        self._trip("vision")
        return await self.models.describe_image(image, prompt)

    async def chat(self, request: ChatRequest) -> AsyncIterator[LlmEvent]:
        if request.tools and self.tool_calls and request.messages[-1].role == "user":  # a turn's first round
            yield ToolCallEvent(call=self.tool_calls.popleft())
            yield ChatDone(finish_reason="tool_calls", prompt_tokens=0, completion_tokens=0)
            return
        inner = self.models.chat(request)
        try:
            async for event in inner:
                yield event
                if isinstance(event, TextDelta):
                    self._trip("llm")
        finally:
            await inner.aclose()

    async def prefill(self, request: ChatRequest) -> int:
        return await self.models.prefill(request)

    async def synthesize(self, request: SynthesisRequest) -> AsyncIterator[bytes]:
        inner = self.models.synthesize(request)
        try:
            async for chunk in inner:
                self._trip("tts")
                yield chunk
        finally:
            await inner.aclose()
