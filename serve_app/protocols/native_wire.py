"""The native protocol's wire messages (shared/PROTOCOL.md section 1), exactly as named there."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Wire(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore")


# ---- client -> server -------------------------------------------------------------------------


class StartConversationMsg(_Wire):
    type: Literal["start_conversation"]
    session_id: str | None = Field(None, alias="sessionId", max_length=128)
    config: dict[str, Any] | None = None
    resume_token: str | None = Field(None, alias="resumeToken", max_length=128)  # with a stored sessionId


class StopConversationMsg(_Wire):
    type: Literal["stop_conversation"]


class InterruptMsg(_Wire):
    type: Literal["interrupt"]


class AudioChunkMsg(_Wire):
    type: Literal["audio_chunk"]
    audio: str
    timestamp: float | int | None = None


class UploadImageMsg(_Wire):
    type: Literal["upload_image"]
    image: str
    prompt: str | None = Field(None, max_length=2000)


class UserMessageMsg(_Wire):
    type: Literal["user_message"]
    text: str = Field(max_length=8000)


class ResumeSessionMsg(_Wire):
    type: Literal["resume_session"]
    session_id: str = Field(alias="sessionId", max_length=128)
    resume_token: str | None = Field(None, alias="resumeToken", max_length=128)


class ToolResultMsg(_Wire):
    type: Literal["tool_result"]
    call_id: str = Field(alias="callId")
    result: Any = None


class PingMsg(_Wire):
    type: Literal["ping"]
    t: Any = None


class RetryTurnMsg(_Wire):
    type: Literal["retry_turn"]


ClientMessage = Annotated[
    StartConversationMsg | StopConversationMsg | InterruptMsg | AudioChunkMsg | UploadImageMsg | UserMessageMsg
    | ResumeSessionMsg | ToolResultMsg | PingMsg | RetryTurnMsg,
    Field(discriminator="type"),
]
CLIENT_TYPES = {
    "start_conversation", "stop_conversation", "interrupt", "audio_chunk", "upload_image", "user_message",
    "resume_session", "tool_result", "ping", "retry_turn",
}


# ---- server -> client -------------------------------------------------------------------------


class _Out(_Wire):
    def wire(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True)


class SessionStartedMsg(_Out):
    type: Literal["session_started"] = "session_started"
    session_id: str = Field(alias="sessionId")
    resume_token: str = Field(alias="resumeToken")
    config: dict[str, Any]


class SessionResumedMsg(_Out):
    type: Literal["session_resumed"] = "session_resumed"
    session_id: str = Field(alias="sessionId")
    state: str
    messages: list[dict[str, Any]]
    resume_token: str = Field(alias="resumeToken")


class StateChangeMsg(_Out):
    type: Literal["state_change"] = "state_change"
    state: str


class SpeechStartedMsg(_Out):
    type: Literal["speech_started"] = "speech_started"
    audio_ms: int = Field(alias="audioMs")


class SpeechStoppedMsg(_Out):
    type: Literal["speech_stopped"] = "speech_stopped"
    audio_ms: int = Field(alias="audioMs")


class TranscriptPartialMsg(_Out):
    type: Literal["transcript_partial"] = "transcript_partial"
    text: str


class TranscriptFinalMsg(_Out):
    type: Literal["transcript_final"] = "transcript_final"
    text: str


class LlmTokenMsg(_Out):
    type: Literal["llm_token"] = "llm_token"
    token: str
    done: bool = False


class LlmCompleteMsg(_Out):
    type: Literal["llm_complete"] = "llm_complete"
    full_text: str = Field(alias="fullText")


class AudioChunkOutMsg(_Out):
    type: Literal["audio_chunk"] = "audio_chunk"
    audio: str
    chunk_index: int = Field(alias="chunkIndex")


class AudioCompleteMsg(_Out):
    type: Literal["audio_complete"] = "audio_complete"


class ToolCallStartMsg(_Out):
    type: Literal["tool_call_start"] = "tool_call_start"
    tool_name: str = Field(alias="toolName")
    args: Any
    call_id: str = Field(alias="callId")


class ToolCallResultMsg(_Out):
    type: Literal["tool_call_result"] = "tool_call_result"
    tool_name: str = Field(alias="toolName")
    result: Any
    call_id: str = Field(alias="callId")


class VisionResultMsg(_Out):
    type: Literal["vision_result"] = "vision_result"
    description: str


class InterruptedMsg(_Out):
    type: Literal["interrupted"] = "interrupted"
    reason: Literal["user_speech", "manual"]


class StopSpeakingMsg(_Out):
    type: Literal["stop_speaking"] = "stop_speaking"


class ErrorMsg(_Out):
    type: Literal["error"] = "error"
    message: str
    phase: str
    code: str


class PongMsg(_Out):
    type: Literal["pong"] = "pong"
    t: Any = None
