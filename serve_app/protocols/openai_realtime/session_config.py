"""The Realtime session object (GA shape), its deep-merging update, and what it means to the engine.

``session.update`` changes only the fields it names: nested objects merge, anything else
(including ``null``) replaces. A ``turn_detection`` of another ``type`` starts from that type's
documented defaults instead of inheriting the old one's fields. Unknown fields are ignored (and
logged), never an error: strict clients treat errors as fatal.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from serve_app.protocols.openai_realtime.audio import PCM, SAMPLE_RATE
from serve_app.protocols.openai_realtime.errors import INVALID_VALUE, ProtocolError
from serve_app.session.events import Configure
from serve_app.session.options import TurnDetectionOptions
from serve_app.session.policy import ReplyPolicy, TurnPolicy

logger = logging.getLogger(__name__)

OPENAI_VOICES = {"alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar"}
SESSION_LIFETIME_S = 30 * 60
# semantic_vad eagerness -> (end-of-turn probability that ends the turn, longest wait for an unfinished one)
EAGERNESS = {"low": (0.7, 8000), "medium": (0.5, 4000), "auto": (0.5, 4000), "high": (0.3, 2000)}


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore")


class AudioFormat(_Wire):
    type: Literal["audio/pcm", "audio/pcmu", "audio/pcma"] = PCM
    rate: int | None = None

    @model_validator(mode="after")
    def _rate(self) -> AudioFormat:
        if self.type == PCM:
            if self.rate not in (None, SAMPLE_RATE[PCM]):
                raise ValueError(f"audio/pcm is 24000 Hz only, not {self.rate}")
            self.rate = SAMPLE_RATE[PCM]
        else:
            self.rate = None  # G.711 is 8 kHz by definition
        return self

    @model_serializer(mode="wrap")
    def _without_empty_rate(self, handler: Any) -> dict[str, Any]:
        data = handler(self)
        if data.get("rate") is None:
            data.pop("rate", None)
        return data


class ServerVad(_Wire):
    type: Literal["server_vad"] = "server_vad"
    threshold: float = Field(0.5, ge=0, le=1)
    prefix_padding_ms: int = Field(300, ge=0)
    silence_duration_ms: int = Field(500, ge=0)
    create_response: bool = True
    interrupt_response: bool = True
    idle_timeout_ms: int | None = None  # accepted and echoed; no idle prompts are sent


class SemanticVad(_Wire):
    type: Literal["semantic_vad"]
    eagerness: Literal["low", "medium", "high", "auto"] = "auto"
    create_response: bool = True
    interrupt_response: bool = True


TurnDetection = Annotated[ServerVad | SemanticVad, Field(discriminator="type")]


class Transcription(_Wire):
    model: str | None = "whisper-1"  # a name only: every model maps to the server's STT service
    language: str | None = None
    prompt: str | None = None


class NoiseReduction(_Wire):
    type: Literal["near_field", "far_field"] | None = None


class AudioInput(_Wire):
    format: AudioFormat = Field(default_factory=AudioFormat)
    transcription: Transcription | None = Field(default_factory=Transcription)
    noise_reduction: NoiseReduction | None = None
    turn_detection: TurnDetection | None = Field(default_factory=ServerVad)


class AudioOutput(_Wire):
    format: AudioFormat = Field(default_factory=AudioFormat)
    voice: str = "alloy"
    speed: float = Field(1.0, ge=0.25, le=1.5)

    @field_validator("voice", mode="before")
    @classmethod
    def _voice_id(cls, voice: Any) -> Any:
        return voice.get("id") if isinstance(voice, dict) else voice  # GA also allows {"id": ...}


class AudioConfig(_Wire):
    input: AudioInput = Field(default_factory=AudioInput)
    output: AudioOutput = Field(default_factory=AudioOutput)


class FunctionTool(_Wire):
    type: Literal["function"] = "function"
    name: str
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})


class RealtimeSession(_Wire):
    type: Literal["realtime"] = "realtime"
    object: Literal["realtime.session"] = "realtime.session"
    id: str = Field(default_factory=lambda: f"sess_{uuid.uuid4().hex[:20]}")
    model: str = "openrealtime"
    output_modalities: list[Literal["text", "audio"]] = Field(default_factory=lambda: ["audio"])
    instructions: str = ""
    audio: AudioConfig = Field(default_factory=AudioConfig)
    tools: list[FunctionTool] = Field(default_factory=list)
    tool_choice: Literal["auto", "none", "required"] | dict[str, Any] = "auto"
    max_output_tokens: int | Literal["inf"] = "inf"
    tracing: Any = None
    truncation: Any = "auto"
    prompt: Any = None
    include: list[str] | None = None
    expires_at: int = Field(default_factory=lambda: int(time.time()) + SESSION_LIFETIME_S)

    @field_validator("output_modalities")
    @classmethod
    def _one_modality(cls, modalities: list[str]) -> list[str]:
        # GA answers in audio (with a transcript) or in text, not both; ["text", "audio"] means audio
        return ["audio"] if "audio" in modalities else ["text"]

    @field_validator("max_output_tokens")
    @classmethod
    def _token_range(cls, tokens: int | str) -> int | str:
        if isinstance(tokens, int) and not 1 <= tokens <= 4096:
            raise ValueError("must be between 1 and 4096, or 'inf'")
        return tokens

    @property
    def speaks(self) -> bool:
        return self.output_modalities == ["audio"]


_FIXED = ("type", "object", "id", "model", "expires_at")  # a client cannot change these


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        current = out.get(key)
        if key == "turn_detection" and isinstance(value, dict) and isinstance(current, dict) \
                and value.get("type", current.get("type")) != current.get("type"):
            out[key] = value  # another kind of turn detection: its own defaults, not the old fields
        elif isinstance(value, dict) and isinstance(current, dict):
            out[key] = deep_merge(current, value)
        else:
            out[key] = value
    return out


def updated(session: RealtimeSession, update: dict[str, Any]) -> RealtimeSession:
    """The effective session after a partial update; raises ProtocolError and changes nothing if invalid."""
    if update.get("type") == "transcription":
        raise ProtocolError("transcription-only sessions are not supported; use type 'realtime'", INVALID_VALUE,
                            param="session.type")
    changes = {k: v for k, v in update.items() if k not in _FIXED}
    _log_unknown(changes, RealtimeSession, "session")
    merged = deep_merge(session.model_dump(mode="json"), changes)
    detection = merged.get("audio", {}).get("input", {}).get("turn_detection")
    if isinstance(detection, dict):
        detection.setdefault("type", "server_vad")
    try:
        return RealtimeSession.model_validate(merged)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"] if not str(p).startswith(("function-", "tagged-union")))
        raise ProtocolError(f"invalid session.{where}: {first['msg']}", INVALID_VALUE,
                            param=f"session.{where}") from None


def _log_unknown(update: dict[str, Any], model: type[BaseModel], where: str) -> None:
    for key, value in update.items():
        field = model.model_fields.get(key)
        if field is None:
            logger.warning("ignoring unknown field %s.%s", where, key)
        elif isinstance(value, dict) and isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            _log_unknown(value, field.annotation, f"{where}.{key}")


# ---- what the session means to the engine --------------------------------------------------


def engine_tools(tools: list[FunctionTool] | list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Realtime's flat function tools -> the Chat Completions shape the engine and LLM take."""
    out = []
    for tool in tools:
        spec = tool if isinstance(tool, FunctionTool) else FunctionTool.model_validate(tool)
        out.append({"type": "function", "function": {"name": spec.name, "description": spec.description,
                                                     "parameters": spec.parameters}})
    return out


def engine_tool_choice(choice: str | dict[str, Any]) -> str | dict[str, Any]:
    if isinstance(choice, dict):
        name = choice.get("name") or choice.get("function", {}).get("name")
        return {"type": "function", "function": {"name": name}}
    return choice


def engine_voice(voice: str) -> str | None:
    """OpenAI's voice names have no counterpart here: they get the server's voice. Other names pass through."""
    return None if voice in OPENAI_VOICES else voice


def engine_max_tokens(tokens: int | str | None) -> int | None:
    return tokens if isinstance(tokens, int) else None  # "inf": the server's own limit


def turn_policy(detection: ServerVad | SemanticVad | None, defaults: TurnDetectionOptions) -> TurnPolicy:
    if detection is None:
        return TurnPolicy(manual=True, auto_respond=False, interrupt=False, partial_transcripts=False)
    if isinstance(detection, ServerVad):
        options = defaults.model_copy(update={
            "threshold": detection.threshold, "prefix_padding_ms": detection.prefix_padding_ms,
            "min_silence_ms": detection.silence_duration_ms, "smart_turn": False})
    else:
        threshold, wait_ms = EAGERNESS[detection.eagerness]
        options = defaults.model_copy(update={"smart_turn": True, "smart_turn_threshold": threshold,
                                              "max_silence_ms": wait_ms})
    return TurnPolicy(detection=options, auto_respond=detection.create_response,
                      interrupt=detection.interrupt_response, partial_transcripts=False)


def engine_settings(session: RealtimeSession, defaults: TurnDetectionOptions) -> Configure:
    audio = session.audio
    config = {
        "input_sample_rate": SAMPLE_RATE[audio.input.format.type],
        "output_sample_rate": SAMPLE_RATE[audio.output.format.type],
        "voice": engine_voice(audio.output.voice),
        "instructions": session.instructions or None,
        "tools": engine_tools(session.tools),
    }
    replies = ReplyPolicy(speak=session.speaks, builtin_tools=False, end_on_client_tool=True,
                          max_tokens=engine_max_tokens(session.max_output_tokens),
                          tool_choice=engine_tool_choice(session.tool_choice))
    return Configure(config=config, turns=turn_policy(audio.input.turn_detection, defaults), replies=replies)
