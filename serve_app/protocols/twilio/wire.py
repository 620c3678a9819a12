"""Twilio Media Streams' WebSocket messages, named as Twilio names them (camelCase on the wire).

From Twilio: ``connected``, ``start``, ``media``, ``mark``, ``dtmf``, ``stop``. To Twilio (a
bidirectional ``<Connect><Stream>`` only): ``media``, ``mark`` and ``clear``; Twilio ends the call
with error 31924 on anything else, so nothing but these three is ever sent. Numbers that Twilio
sends as strings (``sequenceNumber``, ``chunk``, ``timestamp``) are accepted as either.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

MULAW = "audio/x-mulaw"
SAMPLE_RATE = 8000
FRAME_BYTES = 160  # 20 ms of 8 kHz µ-law: the frame size Twilio sends and expects


class _Wire(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore")


# ---- from Twilio ------------------------------------------------------------------------------


class Connected(_Wire):
    event: Literal["connected"]
    protocol: str = "Call"
    version: str = ""


class MediaFormat(_Wire):
    encoding: str = MULAW
    sample_rate: int = Field(SAMPLE_RATE, alias="sampleRate")
    channels: int = 1


class StartInfo(_Wire):
    stream_sid: str = Field(alias="streamSid", max_length=128)
    account_sid: str = Field("", alias="accountSid", max_length=128)
    call_sid: str = Field("", alias="callSid", max_length=128)
    tracks: list[str] = Field(default_factory=lambda: ["inbound"])
    custom_parameters: dict[str, str] = Field(default_factory=dict, alias="customParameters")
    media_format: MediaFormat = Field(default_factory=MediaFormat, alias="mediaFormat")


class Start(_Wire):
    event: Literal["start"]
    sequence_number: str | int | None = Field(None, alias="sequenceNumber")
    start: StartInfo
    stream_sid: str | None = Field(None, alias="streamSid")


class MediaPayload(_Wire):
    track: str = "inbound"
    chunk: str | int | None = None
    timestamp: str | int | None = None
    payload: str


class Media(_Wire):
    event: Literal["media"]
    sequence_number: str | int | None = Field(None, alias="sequenceNumber")
    media: MediaPayload
    stream_sid: str | None = Field(None, alias="streamSid")


class MarkName(_Wire):
    name: str = Field(max_length=256)


class Mark(_Wire):
    event: Literal["mark"]
    sequence_number: str | int | None = Field(None, alias="sequenceNumber")
    mark: MarkName
    stream_sid: str | None = Field(None, alias="streamSid")


class DtmfDigit(_Wire):
    track: str = "inbound_track"
    digit: str = Field(pattern=r"^[0-9*#A-Da-dw]$")


class Dtmf(_Wire):
    event: Literal["dtmf"]
    sequence_number: str | int | None = Field(None, alias="sequenceNumber")
    dtmf: DtmfDigit
    stream_sid: str | None = Field(None, alias="streamSid")


class StopInfo(_Wire):
    account_sid: str = Field("", alias="accountSid")
    call_sid: str = Field("", alias="callSid")


class Stop(_Wire):
    event: Literal["stop"]
    sequence_number: str | int | None = Field(None, alias="sequenceNumber")
    stop: StopInfo = Field(default_factory=StopInfo)
    stream_sid: str | None = Field(None, alias="streamSid")


TwilioMessage = Annotated[Connected | Start | Media | Mark | Dtmf | Stop, Field(discriminator="event")]
EVENTS = {"connected", "start", "media", "mark", "dtmf", "stop"}
MESSAGE = TypeAdapter(TwilioMessage)


# ---- to Twilio --------------------------------------------------------------------------------


class _Out(_Wire):
    def wire(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True)


class OutPayload(_Wire):
    payload: str


class MediaOut(_Out):
    event: Literal["media"] = "media"
    stream_sid: str = Field(alias="streamSid")
    media: OutPayload


class MarkOut(_Out):
    event: Literal["mark"] = "mark"
    stream_sid: str = Field(alias="streamSid")
    mark: MarkName


class Clear(_Out):
    event: Literal["clear"] = "clear"
    stream_sid: str = Field(alias="streamSid")
