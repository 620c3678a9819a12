"""Typed commands into a session and events out of it, independent of any wire protocol.

Adapters (native, OpenAI Realtime) translate frames to commands and events to frames; the engine
never sees JSON. Every event a response produces carries that response's generation number, so
output from a cancelled response is dropped by comparison rather than by racing it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from deployments.llm import ChatMessage
from serve_app.session.config import SessionSettings
from serve_app.session.policy import ReplyPolicy, ResponseOverrides, TurnPolicy


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
    settings: SessionSettings = field(default_factory=SessionSettings)
    resume_token: str | None = None  # needed when session_id names a stored session (ownership.py)


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
    message_id: str | None = None  # the user message it belongs to (its description is deleted with it)


@dataclass
class UserText:
    text: str


@dataclass
class ResumeSession:
    session_id: str
    resume_token: str | None = None


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


@dataclass
class TakenOver:
    """The session was resumed on another connection: store what is cut, then end (SessionTakenOver)."""


# ---- commands for clients that manage turns and the conversation themselves ----------------


@dataclass
class Configure:
    """Change settings mid-conversation; a part left None stays as it is."""

    config: dict[str, Any] | None = None  # SessionSettings fields, merged over the current ones
    turns: TurnPolicy | None = None
    replies: ReplyPolicy | None = None


@dataclass
class CommitAudio:
    """End the user's turn now, with the audio received since the last turn ended."""

    message_id: str | None = None  # id for the user message; default: a new one


@dataclass
class ClearAudio:
    """Drop the audio received since the last turn ended."""


@dataclass
class CreateResponse:
    """Answer now. ``tag`` comes back on ResponseStarted and ResponseEnded."""

    tag: str | None = None
    overrides: ResponseOverrides | None = None


@dataclass
class AddMessage:
    """Put a message into the conversation without answering it."""

    message_id: str
    message: ChatMessage
    after: str | None = None  # id of the message it follows; "" = first; None = last


@dataclass
class DeleteMessage:
    message_id: str


@dataclass
class TruncateReply:
    """The client played only ``audio_ms`` of a reply: cut its stored text and context to that."""

    message_id: str
    audio_ms: int


Command = (
    StartConversation | StopConversation | Interrupt | AudioIn | ImageIn | UserText | ResumeSession
    | ToolResult | Ping | RetryTurn | Disconnected | TakenOver | Configure | CommitAudio | ClearAudio | CreateResponse
    | AddMessage | DeleteMessage | TruncateReply
)


# ---- events (engine -> adapter) ------------------------------------------------------------


@dataclass
class SessionStarted:
    session_id: str
    settings: SessionSettings
    resume_token: str | None = None  # the secret that resumes it; a new one on every start and resume


@dataclass
class SessionResumed:
    session_id: str
    state: State
    messages: list[dict[str, Any]]
    resume_token: str | None = None


@dataclass
class SessionTakenOver:
    """The last event of a session another connection resumed; the adapter closes this socket."""


@dataclass
class StateChanged:
    state: State


@dataclass
class SpeechStarted:
    audio_ms: int
    message_id: str = ""  # the user message this speech will become


@dataclass
class SpeechStopped:
    audio_ms: int
    message_id: str = ""


@dataclass
class TranscriptPartial:
    text: str


@dataclass
class TranscriptFinal:
    text: str
    message_id: str = ""


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
class SentenceSent:
    """All of one spoken piece's audio has been emitted; it ends ``end_ms`` into the reply's audio.

    For adapters that learn what the listener has played (Twilio's marks): cutting a reply at
    ``end_ms`` with ``TruncateReply`` keeps exactly the pieces up to and including this one."""

    text: str
    end_ms: float


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
    ref: str | None = None  # the message id or response tag the error is about
    retryable: bool = False  # the turn failed and RetryTurn would run it again


@dataclass
class Pong:
    t: Any = None


# ---- events for clients that manage turns and the conversation themselves ----------------


@dataclass
class UserAudioCommitted:
    """A turn's audio became a user message (its transcript follows: TranscriptFinal or TranscriptEmpty)."""

    message_id: str
    start_ms: int
    end_ms: int


@dataclass
class TranscriptEmpty:
    """The committed audio held no words; no user message was added."""

    message_id: str


@dataclass
class ResponseStarted:
    tag: str | None
    message_id: str  # the reply's message id


@dataclass
class ResponseEnded:
    tag: str | None
    message_id: str
    generation: int
    status: str  # completed | incomplete (token limit) | cancelled | failed
    reason: str | None = None  # cancelled: user_speech | manual
    input_tokens: int = 0
    output_tokens: int = 0
    error: ErrorEvent | None = None


@dataclass
class ReplyTruncated:
    message_id: str
    audio_ms: int  # clamped to the audio the reply had
    text: str  # what is left of the reply


Event = (
    SessionStarted | SessionResumed | StateChanged | SpeechStarted | SpeechStopped | TranscriptPartial
    | TranscriptFinal | LlmToken | LlmComplete | AudioOut | SentenceSent | AudioComplete | ToolCallStarted | ToolCallFinished
    | VisionResult | Interrupted | StopSpeaking | ErrorEvent | Pong | UserAudioCommitted | TranscriptEmpty
    | ResponseStarted | ResponseEnded | ReplyTruncated | SessionTakenOver
)


@dataclass
class Outgoing:
    """An event with the generation of the response that produced it (None: not from a response)."""

    event: Event
    generation: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
