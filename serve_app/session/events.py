"""Typed commands into a session and events out of it, independent of any wire protocol.

Adapters (native, OpenAI Realtime) translate frames to commands and events to frames; the engine
never sees JSON. Every event a response produces carries that response's generation number, so
output from a cancelled response is dropped by comparison rather than by racing it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class State(str, Enum):
    IDLE = "idle"
    LISTENING = "listening"
    TRANSCRIBING = "transcribing"
    THINKING = "thinking"
    SPEAKING = "speaking"


# ---- commands (adapter -> engine) ----------------------------------------------------------


@dataclass
class StartConversation:
    session_id: str | None
    config: dict[str, Any]


@dataclass
class StopConversation:
    pass


@dataclass
class Interrupt:
    pass


@dataclass
class AudioIn:
    """Microphone audio, already decoded to 16-bit PCM at the session's input sample rate."""

    pcm16: bytes


@dataclass
class ImageIn:
    data: bytes
    prompt: str | None = None


@dataclass
class UserText:
    text: str


@dataclass
class ResumeSession:
    session_id: str


@dataclass
class ToolResult:
    call_id: str
    result: Any


@dataclass
class Ping:
    t: Any = None


@dataclass
class RetryTurn:
    """Run the last failed turn again (after an STT or LLM error)."""


@dataclass
class Disconnected:
    pass


Command = (
    StartConversation | StopConversation | Interrupt | AudioIn | ImageIn | UserText | ResumeSession
    | ToolResult | Ping | RetryTurn | Disconnected
)


# ---- events (engine -> adapter) ------------------------------------------------------------


@dataclass
class SessionStarted:
    session_id: str
    config: dict[str, Any]


@dataclass
class SessionResumed:
    session_id: str
    state: State
    messages: list[dict[str, Any]]


@dataclass
class StateChanged:
    state: State


@dataclass
class SpeechStarted:
    audio_ms: int


@dataclass
class SpeechStopped:
    audio_ms: int


@dataclass
class TranscriptPartial:
    text: str


@dataclass
class TranscriptFinal:
    text: str


@dataclass
class LlmToken:
    token: str
    done: bool = False


@dataclass
class LlmComplete:
    full_text: str


@dataclass
class AudioOut:
    """PCM16 at the session's output sample rate."""

    pcm16: bytes
    chunk_index: int


@dataclass
class AudioComplete:
    pass


@dataclass
class ToolCallStarted:
    call_id: str
    tool_name: str
    args: Any


@dataclass
class ToolCallFinished:
    call_id: str
    tool_name: str
    result: Any


@dataclass
class VisionResult:
    description: str


@dataclass
class Interrupted:
    reason: str  # user_speech | manual


@dataclass
class StopSpeaking:
    pass


@dataclass
class ErrorEvent:
    message: str
    phase: str
    code: str
    fatal: bool = False


@dataclass
class Pong:
    t: Any = None


Event = (
    SessionStarted | SessionResumed | StateChanged | SpeechStarted | SpeechStopped | TranscriptPartial
    | TranscriptFinal | LlmToken | LlmComplete | AudioOut | AudioComplete | ToolCallStarted | ToolCallFinished
    | VisionResult | Interrupted | StopSpeaking | ErrorEvent | Pong
)


@dataclass
class Outgoing:
    """An event with the generation of the response that produced it (None: not from a response)."""

    event: Event
    generation: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
