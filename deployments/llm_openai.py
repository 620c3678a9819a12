"""Any OpenAI-compatible chat server (vLLM, llama.cpp server, LM Studio, OpenAI itself).

Streamed tool calls arrive as fragments keyed by index (id and name first, then pieces of the
arguments JSON); ``ChunkAssembler`` joins them and emits each call once the stream ends.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import openai
from openai.types.chat import ChatCompletionChunk

from deployments.errors import ModelInputError
from deployments.llm import (
    ChatDone,
    ChatMessage,
    ChatRequest,
    LlmEvent,
    LlmOptions,
    TextDelta,
    ToolCall,
    ToolCallEvent,
    new_call_id,
)


def openai_messages(messages: list[ChatMessage]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for message in messages:
        item: dict[str, Any] = {"role": message.role, "content": message.content}
        if message.tool_calls:
            item["tool_calls"] = [{"id": c.id, "type": "function",
                                   "function": {"name": c.name, "arguments": c.arguments or "{}"}}
                                  for c in message.tool_calls]
        if message.role == "tool":
            item["tool_call_id"] = message.tool_call_id
        out.append(item)
    return out


@dataclass
class _CallParts:
    id: str = ""
    name: str = ""
    arguments: str = ""


class ChunkAssembler:
    """Turns ``ChatCompletionChunk``s into our events: text at once, tool calls and done at the end."""

    def __init__(self) -> None:
        self.calls: dict[int, _CallParts] = {}
        self.finish_reason: str | None = None
        self.prompt_tokens = 0
        self.completion_tokens = 0

    def feed(self, chunk: ChatCompletionChunk) -> list[LlmEvent]:
        events: list[LlmEvent] = []
        if chunk.usage is not None:
            self.prompt_tokens = chunk.usage.prompt_tokens
            self.completion_tokens = chunk.usage.completion_tokens
        for choice in chunk.choices:
            if choice.index != 0:
                continue
            if choice.delta.content:
                events.append(TextDelta(text=choice.delta.content))
            for fragment in choice.delta.tool_calls or []:
                parts = self.calls.setdefault(fragment.index, _CallParts())
                parts.id = parts.id or fragment.id or ""
                if fragment.function is not None:
                    parts.name += fragment.function.name or ""
                    parts.arguments += fragment.function.arguments or ""
            if choice.finish_reason:
                self.finish_reason = choice.finish_reason
        return events

    def finish(self) -> list[LlmEvent]:
        events: list[LlmEvent] = [
            ToolCallEvent(call=ToolCall(id=parts.id or new_call_id(), name=parts.name, arguments=parts.arguments or "{}"))
            for _, parts in sorted(self.calls.items())
            if parts.name
        ]
        if events:
            finish = "tool_calls"
        else:
            finish = "length" if self.finish_reason == "length" else "stop"
        events.append(ChatDone(finish_reason=finish, prompt_tokens=self.prompt_tokens,
                               completion_tokens=self.completion_tokens))
        return events


class OpenAIBackend:
    def __init__(self, options: LlmOptions) -> None:
        self.options = options
        self.base_url = options.openai_base_url
        self.model_name = options.openai_model or ""
        api_key = options.openai_api_key or os.environ.get("OPENAI_API_KEY") or "none"
        # no retries: a realtime turn would rather fail fast and let the session say so
        self.client = openai.AsyncOpenAI(base_url=self.base_url, api_key=api_key,
                                         timeout=options.request_timeout_s, max_retries=0)

    async def prefill(self, request: ChatRequest) -> int:
        return 0  # the server keeps its own prompt cache

    def info(self) -> dict[str, Any]:
        return {"base_url": self.base_url, "tool_calls": "native"}

    async def chat(self, request: ChatRequest) -> AsyncIterator[LlmEvent]:
        model = request.model or self.model_name
        extra: dict[str, Any] = {}
        if request.tools and request.tool_choice != "none":
            extra = {"tools": request.tools, "tool_choice": request.tool_choice}
        assembler = ChunkAssembler()
        stream = None
        try:
            stream = await self.client.chat.completions.create(
                model=model, messages=openai_messages(request.messages), max_tokens=request.max_tokens,
                temperature=request.temperature, stream=True, stream_options={"include_usage": True}, **extra)
            async for chunk in stream:
                for event in assembler.feed(chunk):
                    yield event
            for event in assembler.finish():
                yield event
        except openai.NotFoundError as error:
            raise ModelInputError(f"the server at {self.base_url} has no model {model!r} ({error.message})",
                                  "unknown_model") from None
        except openai.BadRequestError as error:
            raise ModelInputError(f"the server refused the request: {error.message}", "invalid_request") from None
        except openai.APITimeoutError:
            raise TimeoutError(f"the server at {self.base_url} sent nothing for {self.options.request_timeout_s} s"
                               ) from None
        except openai.APIConnectionError as error:
            raise ConnectionError(f"cannot reach the OpenAI-compatible server at {self.base_url}: {error}") from None
        finally:
            if stream is not None:
                await stream.close()
