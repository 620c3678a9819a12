"""The language model service: a chat request in, text deltas and tool calls streamed out.

Three backends behind one wire format: llama.cpp in process (the embedded SmolLM2-135M default),
an Ollama server, or any OpenAI-compatible server. Every stream ends with exactly one ``ChatDone``;
closing the stream stops the backend's work (a worker thread's stop event, or the HTTP stream).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal, Protocol

from pydantic import BaseModel, Field, ValidationError, model_validator
from ray import serve

from deployments.errors import ModelInputError


class LlmOptions(BaseModel):
    """Which backend answers, and its settings. Defaults: SmolLM2-135M-Instruct in process on CPU."""

    backend: Literal["llama_cpp", "ollama", "openai"] = Field(
        "llama_cpp", description="llama_cpp: a GGUF in this process; ollama / openai: a model server")
    request_timeout_s: float = Field(60.0, gt=0, description="Longest wait for a model server's next bytes")
    max_output_tokens: int = Field(4096, ge=1, description="Largest max_tokens a request may ask for")

    model_path: str | None = Field(None, description="GGUF file; None = the embedded SmolLM2-135M Q4_1")
    n_ctx: int = Field(4096, ge=256, description="Context window in tokens (prompt plus reply)")
    n_threads: int | None = Field(None, ge=1, description="CPU threads; None = llama.cpp's default (half the cores)")
    n_threads_batch: int | None = Field(
        None, ge=1, description="Threads for reading a prompt (a burst before the first token); None = all cores")
    prompt_cache_mb: int = Field(
        256, ge=0, description="Saved KV states of recent conversations, so sessions sharing a replica keep "
        "their prompt cache; 0 = only the live one")
    n_gpu_layers: int = Field(0, ge=-1, description="Layers offloaded to a GPU build of llama.cpp; -1 = all")
    chat_format: Literal["gguf", "chatml"] = Field(
        "gguf", description="gguf: the chat template inside the model file (ChatML if it has none); chatml: ChatML")
    max_tool_calls: int = Field(
        1, ge=1, le=8, description="Calls one llama.cpp reply may hold; small models repeat a call when allowed more")
    tool_decision: Literal["embedding", "two_step", "one_pass"] = Field(
        "embedding", description="llama.cpp with tool_choice auto/required. embedding: a sentence-embedding model "
        "picks the tool the message needs (or none) from the tools' descriptions, then the LLM fills its "
        "arguments; two_step: the same with the LLM's own channel scores; one_pass: text or a call in one "
        "constrained reply")
    tool_margin: float = Field(
        2.0, ge=0, description="two_step: log-likelihood (nats) by which the best tool must beat 'no tool'")
    router_margin: float = Field(
        0.09, description="embedding: cosine similarity by which the closest tool must beat the closest "
        "words-only line (deployments/tool_router.py)")

    ollama_host: str = Field("http://127.0.0.1:11434", description="Base URL of the Ollama server")
    ollama_model: str = Field("llama3.2", description="Model name as `ollama list` shows it")
    ollama_keep_alive: str | float | None = Field(None, description="How long Ollama keeps the model loaded")
    ollama_options: dict[str, Any] = Field(default_factory=dict, description="Extra Ollama options (num_ctx, …)")

    openai_base_url: str = Field("http://127.0.0.1:8080/v1", description="Base URL of the OpenAI-compatible API")
    openai_api_key: str | None = Field(None, description="API key; None = $OPENAI_API_KEY, or none at all")
    openai_model: str | None = Field(None, description="Model name the server expects (required for openai)")

    @model_validator(mode="after")
    def _openai_needs_model(self) -> LlmOptions:
        if self.backend == "openai" and not self.openai_model:
            raise ValueError("backend 'openai' needs openai_model")
        return self


class ToolCall(BaseModel):
    id: str
    name: str
    arguments: str  # JSON text, OpenAI style


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant", "tool"]
    content: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None


class ChatRequest(BaseModel):
    messages: list[ChatMessage]
    tools: list[dict] = []  # OpenAI function schemas {"type": "function", "function": {name, description, parameters}}
    tool_choice: Literal["auto", "none", "required"] | dict = "auto"
    max_tokens: int = 256
    temperature: float = 0.7
    model: str | None = None  # overrides the configured model name (ollama / openai)


class TextDelta(BaseModel):
    type: Literal["text"] = "text"
    text: str


class ToolCallEvent(BaseModel):
    type: Literal["tool_call"] = "tool_call"
    call: ToolCall


class ChatDone(BaseModel):
    type: Literal["done"] = "done"
    finish_reason: Literal["stop", "length", "tool_calls", "cancelled"]
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = Field(0, description="prompt tokens served from the KV cache, not evaluated again")


LlmEvent = TextDelta | ToolCallEvent | ChatDone


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


class ChatBackend(Protocol):
    model_name: str

    def chat(self, request: ChatRequest) -> AsyncIterator[LlmEvent]: ...

    def info(self) -> dict[str, Any]: ...

    async def prefill(self, request: ChatRequest) -> int:
        """Read the request's prompt into the model's cache ahead of the turn that will send it;
        returns the prompt tokens read (0 where a server keeps its own cache)."""
        ...


_FUNCTION_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_JSON_TYPES = {"object", "array", "string", "number", "integer", "boolean", "null"}


def _check_schema(schema: Any, where: str) -> None:
    """Catch the schema mistakes that break every backend: unknown types, non-object nodes."""
    if not isinstance(schema, dict):
        raise ModelInputError(f"{where} must be a JSON schema object", "invalid_tool_schema")
    kinds = schema.get("type", [])
    for kind in kinds if isinstance(kinds, list) else [kinds]:
        if kind not in _JSON_TYPES:
            raise ModelInputError(f"{where} has unknown type {kind!r}", "invalid_tool_schema")
    properties = schema.get("properties", {})
    if not isinstance(properties, dict):
        raise ModelInputError(f"{where}.properties must be an object", "invalid_tool_schema")
    for name, sub in properties.items():
        _check_schema(sub, f"{where}.properties.{name}")
    required = schema.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) and r in properties for r in required):
        raise ModelInputError(f"{where}.required must list names from its properties", "invalid_tool_schema")
    if "items" in schema and not isinstance(schema["items"], list):
        _check_schema(schema["items"], f"{where}.items")


def _check_tools(tools: list[dict]) -> set[str]:
    names: set[str] = set()
    for index, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type", "function") != "function" or not isinstance(function, dict):
            raise ModelInputError(f'tools[{index}] must be {{"type": "function", "function": {{...}}}}',
                                  "invalid_tool_schema")
        name = function.get("name")
        if not isinstance(name, str) or not _FUNCTION_NAME.match(name):
            raise ModelInputError(f"tools[{index}].function.name must be 1-64 letters, digits, _ or -",
                                  "invalid_tool_schema")
        if name in names:
            raise ModelInputError(f"tool {name!r} is declared twice", "invalid_tool_schema")
        names.add(name)
        parameters = function.get("parameters")
        if parameters is not None:
            _check_schema(parameters, f"tool {name!r} parameters")
            if parameters.get("type", "object") != "object":
                raise ModelInputError(f"tool {name!r} parameters must be an object schema", "invalid_tool_schema")
    return names


def chosen_function(request: ChatRequest) -> str | None:
    """The function name a dict tool_choice forces, else None."""
    choice = request.tool_choice
    return choice.get("function", {}).get("name") if isinstance(choice, dict) else None


def offered_tools(request: ChatRequest) -> list[dict]:
    """The tools the model may call under this request's tool_choice."""
    if request.tool_choice == "none":
        return []
    forced = chosen_function(request)
    if forced is None:
        return request.tools
    return [tool for tool in request.tools if tool["function"]["name"] == forced]


def parse_request(request: ChatRequest | dict, max_output_tokens: int) -> ChatRequest:
    """Validate a request into a ChatRequest; every problem becomes a ModelInputError."""
    if not isinstance(request, ChatRequest):
        try:
            request = ChatRequest.model_validate(request)
        except ValidationError as error:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
            raise ModelInputError(f"invalid chat request: {problems}", "invalid_request") from None
    if not request.messages:
        raise ModelInputError("a chat request needs at least one message", "empty_messages")
    for index, message in enumerate(request.messages):
        for call in message.tool_calls or []:
            try:
                json.loads(call.arguments or "{}")
            except json.JSONDecodeError:
                raise ModelInputError(f"messages[{index}]: tool call {call.id!r} arguments are not JSON",
                                      "invalid_request") from None
        if message.role == "tool" and not message.tool_call_id:
            raise ModelInputError(f"messages[{index}]: a tool message needs tool_call_id", "missing_tool_call_id")
    if not 1 <= request.max_tokens <= max_output_tokens:
        raise ModelInputError(f"max_tokens must be between 1 and {max_output_tokens}, got {request.max_tokens}",
                              "invalid_max_tokens")
    if not 0.0 <= request.temperature <= 2.0:
        raise ModelInputError(f"temperature must be between 0 and 2, got {request.temperature}", "invalid_temperature")
    names = _check_tools(request.tools)
    if isinstance(request.tool_choice, dict):
        forced = chosen_function(request)
        if request.tool_choice.get("type", "function") != "function" or not isinstance(forced, str):
            raise ModelInputError('tool_choice must be "auto", "none", "required" or '
                                  '{"type": "function", "function": {"name": ...}}', "invalid_request")
        if forced not in names:
            raise ModelInputError(f"tool_choice names {forced!r}, which is not among the tools", "unknown_tool")
    elif request.tool_choice == "required" and not names:
        raise ModelInputError('tool_choice "required" needs at least one tool', "invalid_request")
    return request


def build_backend(options: LlmOptions) -> ChatBackend:
    if options.backend == "ollama":
        from deployments.llm_ollama import OllamaBackend

        return OllamaBackend(options)
    if options.backend == "openai":
        from deployments.llm_openai import OpenAIBackend

        return OpenAIBackend(options)
    from deployments.llm_llama_cpp import LlamaCppBackend

    return LlamaCppBackend(options)


@serve.deployment(name="LLM")
class LanguageModel:
    """Chat completions for the session engine, streamed as TextDelta / ToolCallEvent / ChatDone."""

    def __init__(self, options: LlmOptions | dict | None = None) -> None:
        self.options = options if isinstance(options, LlmOptions) else LlmOptions.model_validate(options or {})
        self.backend = build_backend(self.options)

    async def chat(self, request: ChatRequest | dict) -> AsyncIterator[LlmEvent]:
        request = parse_request(request, self.options.max_output_tokens)
        async with contextlib.aclosing(self.backend.chat(request)) as events:
            async for event in events:
                yield event
                await asyncio.sleep(0)  # a cancel from the caller lands between events

    async def prefill(self, request: ChatRequest | dict) -> int:
        """A conversation whose prompt prefix is new (a session starting, its window moving on) has it
        read now, before the user speaks or while an answer plays, not before a turn's first token."""
        return await self.backend.prefill(parse_request(request, self.options.max_output_tokens))

    async def info(self) -> dict:
        return {"backend": self.options.backend, "model": self.backend.model_name, **self.backend.info()}
