"""An Ollama server through the official async client; closing the stream closes the HTTP response.

Ollama cannot force a call, so ``tool_choice="required"`` only offers the tools (a named function
is offered alone); ``"none"`` offers none.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import ollama

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
    offered_tools,
)


def ollama_messages(messages: list[ChatMessage]) -> list[dict[str, Any]]:
    """Our messages in Ollama's shape: call arguments as objects, results named by their tool."""
    names = {call.id: call.name for m in messages for call in m.tool_calls or []}
    out: list[dict[str, Any]] = []
    for message in messages:
        item: dict[str, Any] = {"role": message.role, "content": message.content or ""}
        if message.tool_calls:
            item["tool_calls"] = [{"function": {"name": c.name, "arguments": json.loads(c.arguments or "{}")}}
                                  for c in message.tool_calls]
        if message.role == "tool" and message.tool_call_id in names:
            item["tool_name"] = names[message.tool_call_id]
        out.append(item)
    return out


class OllamaBackend:
    def __init__(self, options: LlmOptions) -> None:
        self.options = options
        self.host = options.ollama_host
        self.model_name = options.ollama_model
        self.client = ollama.AsyncClient(host=self.host, timeout=options.request_timeout_s)

    async def prefill(self, request: ChatRequest) -> int:
        return 0  # the server keeps its own prompt cache

    def info(self) -> dict[str, Any]:
        return {"host": self.host, "tool_calls": "native"}

    async def chat(self, request: ChatRequest) -> AsyncIterator[LlmEvent]:
        model = request.model or self.model_name
        tools = offered_tools(request)
        stream = None
        try:
            stream = await self.client.chat(
                model=model,
                messages=ollama_messages(request.messages),
                tools=tools or None,
                stream=True,
                options={**self.options.ollama_options, "num_predict": request.max_tokens,
                         "temperature": request.temperature},
                keep_alive=self.options.ollama_keep_alive,
            )
            calls: list[ToolCall] = []
            done_reason, prompt_tokens, completion_tokens = "stop", 0, 0
            async for part in stream:
                if part.message.content:
                    yield TextDelta(text=part.message.content)
                for tool_call in part.message.tool_calls or []:
                    call = ToolCall(id=new_call_id(), name=tool_call.function.name,
                                    arguments=json.dumps(dict(tool_call.function.arguments)))
                    calls.append(call)
                    yield ToolCallEvent(call=call)
                if part.done:
                    done_reason = part.done_reason or "stop"
                    prompt_tokens, completion_tokens = part.prompt_eval_count or 0, part.eval_count or 0
            finish = "tool_calls" if calls else "length" if done_reason == "length" else "stop"
            yield ChatDone(finish_reason=finish, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
        except ollama.ResponseError as error:
            if error.status_code == 404:
                raise ModelInputError(f"Ollama at {self.host} has no model {model!r} ({error.error})",
                                      "unknown_model") from None
            if error.status_code == 400:
                raise ModelInputError(f"Ollama refused the request: {error.error}", "invalid_request") from None
            raise RuntimeError(f"Ollama at {self.host} failed with HTTP {error.status_code}: {error.error}") from None
        except (httpx.ConnectError, ConnectionError) as error:
            raise ConnectionError(f"cannot reach Ollama at {self.host}: {error}") from None
        except httpx.TimeoutException:
            raise TimeoutError(f"Ollama at {self.host} sent nothing for {self.options.request_timeout_s} s") from None
        finally:
            if stream is not None:
                await stream.aclose()
