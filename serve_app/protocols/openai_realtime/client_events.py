"""Client events (GA names), parsed in one place. A beta client's events are translated first (beta.py)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from serve_app.protocols.openai_realtime.errors import INVALID_VALUE, UNKNOWN_EVENT, ProtocolError


class _ClientEvent(BaseModel):
    model_config = ConfigDict(extra="ignore")

    event_id: str | None = None


class SessionUpdate(_ClientEvent):
    type: Literal["session.update"]
    session: dict[str, Any]


class AudioAppend(_ClientEvent):
    type: Literal["input_audio_buffer.append"]
    audio: str


class AudioCommit(_ClientEvent):
    type: Literal["input_audio_buffer.commit"]


class AudioClear(_ClientEvent):
    type: Literal["input_audio_buffer.clear"]


class ItemCreate(_ClientEvent):
    type: Literal["conversation.item.create"]
    item: dict[str, Any]
    previous_item_id: str | None = None


class ItemRetrieve(_ClientEvent):
    type: Literal["conversation.item.retrieve"]
    item_id: str


class ItemDelete(_ClientEvent):
    type: Literal["conversation.item.delete"]
    item_id: str


class ItemTruncate(_ClientEvent):
    type: Literal["conversation.item.truncate"]
    item_id: str
    content_index: int = Field(0, ge=0)
    audio_end_ms: int = Field(ge=0)


class ResponseCreate(_ClientEvent):
    type: Literal["response.create"]
    response: dict[str, Any] | None = None


class ResponseCancel(_ClientEvent):
    type: Literal["response.cancel"]
    response_id: str | None = None


class OutputAudioClear(_ClientEvent):
    """WebRTC/SIP only; over a WebSocket there is no server-side playback buffer to clear."""

    type: Literal["output_audio_buffer.clear"]


ClientEvent = Annotated[
    SessionUpdate | AudioAppend | AudioCommit | AudioClear | ItemCreate | ItemRetrieve | ItemDelete
    | ItemTruncate | ResponseCreate | ResponseCancel | OutputAudioClear,
    Field(discriminator="type"),
]
_PARSER = TypeAdapter(ClientEvent)
CLIENT_EVENT_TYPES = frozenset(m.model_fields["type"].annotation.__args__[0] for m in _ClientEvent.__subclasses__())


class ResponseRequest(BaseModel):
    """``response.create``'s ``response``: per-response overrides of the session."""

    model_config = ConfigDict(extra="ignore")

    instructions: str | None = None
    output_modalities: list[Literal["text", "audio"]] | None = None
    audio: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    max_output_tokens: int | Literal["inf"] | None = None
    metadata: dict[str, Any] | None = None
    conversation: str | None = None


def parse(raw: dict[str, Any]) -> Any:
    kind = raw.get("type")
    if not isinstance(kind, str) or kind not in CLIENT_EVENT_TYPES:
        raise ProtocolError(f"Invalid value: {kind!r}. Supported values are: {', '.join(sorted(CLIENT_EVENT_TYPES))}",
                            UNKNOWN_EVENT, param="type")
    try:
        return _PARSER.validate_python(raw)
    except ValidationError as error:
        raise invalid(error, prefix="") from None


def invalid(error: ValidationError, prefix: str) -> ProtocolError:
    first = error.errors()[0]
    where = ".".join(str(p) for p in first["loc"][1 if not prefix else 0:])
    param = f"{prefix}{where}" if where else None
    return ProtocolError(f"invalid {param or 'event'}: {first['msg']}", INVALID_VALUE, param=param)
