"""A conversation's own settings, in the engine's words: audio rates, voice, instructions, client tools.

Adapters parse their wire's form of these (native ``start_conversation.config``, OpenAI
``session.update``) and hand the engine this. What only the adapter understands (the native
audio format and binary frames) rides along in ``transport``: the engine stores it with the
session and gives it back on resume, without reading it.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from serve_app.session.audio_input import SUPPORTED_INPUT_RATES

# the keys a session row had before settings were the engine's own (the native camelCase config)
_LEGACY_KEYS = {"inputSampleRate": "input_sample_rate", "outputSampleRate": "output_sample_rate"}
_LEGACY_TRANSPORT = ("audioFormat", "binaryAudio")


class SessionSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input_sample_rate: int = 16000
    output_sample_rate: int = 24000
    voice: str | None = None
    instructions: str | None = None
    tools: list[dict] = Field(default_factory=list, description="functions the client executes itself")
    transport: dict[str, Any] = Field(default_factory=dict, description="the adapter's own settings, kept as given")

    @field_validator("input_sample_rate", "output_sample_rate")
    @classmethod
    def _supported_rate(cls, rate: int) -> int:
        return supported_rate(rate)

    @field_validator("tools")
    @classmethod
    def _function_tools(cls, tools: list[dict]) -> list[dict]:
        return function_tools(tools)

    def stored(self) -> dict[str, Any]:
        return self.model_dump()

    @classmethod
    def from_stored(cls, row: dict[str, Any]) -> SessionSettings:
        """A session row, also one written before these settings existed."""
        if "transport" not in row and any(key in row for key in (*_LEGACY_KEYS, *_LEGACY_TRANSPORT)):
            row = {_LEGACY_KEYS.get(k, k): v for k, v in row.items() if k not in _LEGACY_TRANSPORT} | {
                "transport": {k: row[k] for k in _LEGACY_TRANSPORT if k in row}}
        return cls.model_validate(row)


def supported_rate(rate: int) -> int:
    if rate not in SUPPORTED_INPUT_RATES:
        raise ValueError(f"{rate} Hz is not supported; use one of {', '.join(map(str, SUPPORTED_INPUT_RATES))}")
    return rate


def function_tools(tools: list[dict]) -> list[dict]:
    for tool in tools:
        function = tool.get("function") if tool.get("type") == "function" else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            # pydantic turns a ValueError (not a TypeError) into a validation error
            raise ValueError(  # noqa: TRY004
                'each tool must be {"type": "function", "function": {"name": ..., "parameters": {...}}}')
    return tools
