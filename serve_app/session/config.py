"""A client's per-session settings (`start_conversation.config`), in the protocol's camelCase."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from serve_app.session.audio_input import SUPPORTED_INPUT_RATES


class SessionConfig(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    input_sample_rate: int = Field(16000, alias="inputSampleRate")
    output_sample_rate: int = Field(24000, alias="outputSampleRate")
    audio_format: Literal["pcm16", "mulaw"] = Field("pcm16", alias="audioFormat")
    binary_audio: bool = Field(False, alias="binaryAudio")
    voice: str | None = None
    instructions: str | None = None
    tools: list[dict] = Field(default_factory=list, description="functions the client executes itself")

    @field_validator("input_sample_rate", "output_sample_rate")
    @classmethod
    def _supported_rate(cls, rate: int) -> int:
        if rate not in SUPPORTED_INPUT_RATES:
            raise ValueError(f"{rate} Hz is not supported; use one of {', '.join(map(str, SUPPORTED_INPUT_RATES))}")
        return rate

    @field_validator("tools")
    @classmethod
    def _function_tools(cls, tools: list[dict]) -> list[dict]:
        for tool in tools:
            function = tool.get("function") if tool.get("type") == "function" else None
            if not isinstance(function, dict) or not isinstance(function.get("name"), str):
                # pydantic turns a ValueError (not a TypeError) into a validation error
                raise ValueError(  # noqa: TRY004
                    'each tool must be {"type": "function", "function": {"name": ..., "parameters": {...}}}')
        return tools

    def wire(self) -> dict:
        return self.model_dump(by_alias=True)
