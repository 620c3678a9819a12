"""The native ``start_conversation.config``, in the protocol's camelCase, and what it means to the engine.

Rates, voice, instructions and tools become the engine's ``SessionSettings``; the audio format
and binary frames are this protocol's alone, so they travel in ``SessionSettings.transport``
(stored with the session, hence known again when a socket resumes it).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from serve_app.session.config import SessionSettings, function_tools, supported_rate


class NativeConfig(BaseModel):
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
        return supported_rate(rate)

    @field_validator("tools")
    @classmethod
    def _function_tools(cls, tools: list[dict]) -> list[dict]:
        return function_tools(tools)

    def wire(self) -> dict:
        return self.model_dump(by_alias=True)

    def settings(self) -> SessionSettings:
        return SessionSettings(input_sample_rate=self.input_sample_rate, output_sample_rate=self.output_sample_rate,
                               voice=self.voice, instructions=self.instructions, tools=self.tools,
                               transport={"audioFormat": self.audio_format, "binaryAudio": self.binary_audio})

    @classmethod
    def of(cls, settings: SessionSettings) -> NativeConfig:
        """The native view of a session's settings (defaults where another protocol set them)."""
        transport = settings.transport
        return cls(input_sample_rate=settings.input_sample_rate, output_sample_rate=settings.output_sample_rate,
                   audio_format=transport.get("audioFormat", "pcm16"),
                   binary_audio=bool(transport.get("binaryAudio", False)),
                   voice=settings.voice, instructions=settings.instructions, tools=settings.tools)
