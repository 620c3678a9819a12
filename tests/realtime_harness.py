"""Drives a server with the official `openai` SDK and checks every event it receives.

Each event must parse with the SDK's own pydantic server-event union (GA or beta), arrive in a
frame under 1 MiB, and (GA) be a type Pipecat knows: Pipecat's receive loop dies on any other.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import soxr
from openai import AsyncOpenAI
from openai.types.beta.realtime import RealtimeServerEvent as BetaServerEvent
from openai.types.realtime import RealtimeServerEvent as GaServerEvent
from pydantic import TypeAdapter

GA_EVENTS = TypeAdapter(GaServerEvent)
BETA_EVENTS = TypeAdapter(BetaServerEvent)
MAX_FRAME = 1024 * 1024

# Pipecat's parser table, src/pipecat/services/openai/realtime/events.py `_server_event_types`
# (shared/notes/realtime_protocol.md §1.3, the "safe" column)
PIPECAT_SERVER_EVENT_TYPES = frozenset({
    "error", "session.created", "session.updated", "conversation.created",
    "conversation.item.added", "conversation.item.done", "conversation.item.retrieved",
    "conversation.item.deleted", "conversation.item.truncated",
    "conversation.item.input_audio_transcription.delta",
    "conversation.item.input_audio_transcription.completed",
    "conversation.item.input_audio_transcription.failed",
    "input_audio_buffer.committed", "input_audio_buffer.cleared",
    "input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
    "response.created", "response.done", "response.output_item.added", "response.output_item.done",
    "response.content_part.added", "response.content_part.done",
    "response.output_audio.delta", "response.output_audio.done",
    "response.output_audio_transcript.delta", "response.output_audio_transcript.done",
    "response.output_text.delta", "response.output_text.done",
    "response.function_call_arguments.delta", "response.function_call_arguments.done",
    "rate_limits.updated",
})

# event names that differ between the shapes
NAMES = {
    "ga": {"audio_delta": "response.output_audio.delta", "transcript_delta": "response.output_audio_transcript.delta",
           "transcript_done": "response.output_audio_transcript.done", "text_delta": "response.output_text.delta",
           "text_done": "response.output_text.done", "item_added": "conversation.item.added",
           "audio_part": "output_audio", "text_part": "output_text"},
    "beta": {"audio_delta": "response.audio.delta", "transcript_delta": "response.audio_transcript.delta",
             "transcript_done": "response.audio_transcript.done", "text_delta": "response.text.delta",
             "text_done": "response.text.done", "item_added": "conversation.item.created",
             "audio_part": "audio", "text_part": "text"},
}


def to_24k(pcm16_16k: np.ndarray) -> np.ndarray:
    return (soxr.resample(pcm16_16k.astype(np.float32) / 32768, 16000, 24000) * 32767).astype(np.int16)


def with_silence(pcm16: np.ndarray, seconds: float, rate: int = 24000) -> np.ndarray:
    return np.concatenate([pcm16, np.zeros(int(rate * seconds), dtype=pcm16.dtype)])


class Realtime:
    """One SDK connection; ``recv`` validates, records and returns each server event as a dict."""

    def __init__(self, connection: Any, shape: str) -> None:
        self.connection, self.shape = connection, shape
        self.names = NAMES[shape]
        self.events: list[dict[str, Any]] = []

    async def recv(self, timeout: float = 60) -> dict[str, Any]:
        raw = await asyncio.wait_for(self.connection.recv_bytes(), timeout)
        assert len(raw) < MAX_FRAME
        event = json.loads(raw)
        (GA_EVENTS if self.shape == "ga" else BETA_EVENTS).validate_python(event)
        if self.shape == "ga":
            assert event["type"] in PIPECAT_SERVER_EVENT_TYPES, event["type"]
        self.events.append(event)
        return event

    async def until(self, kind: str, timeout: float = 120, **match: Any) -> dict[str, Any]:
        while True:
            event = await self.recv(timeout)
            if event["type"] == kind and all(event.get(k) == v for k, v in match.items()):
                return event

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == kind]

    def types(self) -> list[str]:
        return [e["type"] for e in self.events]

    def index(self, kind: str) -> int:
        return self.types().index(kind)

    async def configure(self, **fields: Any) -> dict[str, Any]:
        """session.update from GA-style keyword arguments, written in this connection's shape."""
        await self.connection.session.update(session=session_payload(self.shape, **fields))
        return await self.until("session.updated")

    async def append(self, pcm16: np.ndarray, chunk_ms: int = 100, rate: int = 24000) -> None:
        step = rate * chunk_ms // 1000
        for start in range(0, pcm16.size, step):
            chunk = pcm16[start : start + step].astype("<i2").tobytes()
            await self.connection.input_audio_buffer.append(audio=base64.b64encode(chunk).decode())

    async def say(self, text: str) -> None:
        await self.connection.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]})

    def audio(self) -> bytes:
        return b"".join(base64.b64decode(e["delta"]) for e in self.of(self.names["audio_delta"]))


def session_payload(shape: str, *, modalities: list[str] | None = None, instructions: str | None = None,
                    tools: list[dict] | None = None, turn_detection: Any = "unset", transcription: Any = "unset",
                    audio_format: str | None = None) -> dict[str, Any]:
    """A session.update body written by hand for each shape, as a client of that shape would."""
    if shape == "ga":
        session: dict[str, Any] = {"type": "realtime"}
        audio_in: dict[str, Any] = {}
        audio_out: dict[str, Any] = {}
        if modalities is not None:
            session["output_modalities"] = modalities
        if turn_detection != "unset":
            audio_in["turn_detection"] = turn_detection
        if transcription != "unset":
            audio_in["transcription"] = transcription
        if audio_format is not None:
            audio_in["format"] = audio_out["format"] = {"type": audio_format}
        if audio_in or audio_out:
            session["audio"] = {"input": audio_in, "output": audio_out}
    else:
        session = {}
        if modalities is not None:
            session["modalities"] = ["text", "audio"] if "audio" in modalities else ["text"]
        if turn_detection != "unset":
            session["turn_detection"] = turn_detection
        if transcription != "unset":
            session["input_audio_transcription"] = transcription
        if audio_format is not None:
            name = {"audio/pcm": "pcm16", "audio/pcmu": "g711_ulaw", "audio/pcma": "g711_alaw"}[audio_format]
            session["input_audio_format"] = session["output_audio_format"] = name
    if instructions is not None:
        session["instructions"] = instructions
    if tools is not None:
        session["tools"] = tools
    return session


@asynccontextmanager
async def realtime(ws_url: str, shape: str = "ga", api_key: str = "sk-local") -> AsyncIterator[Realtime]:
    """``ws_url`` like ws://127.0.0.1:8000; the SDK appends /realtime to websocket_base_url."""
    client = AsyncOpenAI(api_key=api_key, base_url=ws_url.replace("ws", "http", 1) + "/v1",
                         websocket_base_url=ws_url + "/v1")
    options = {"max_size": MAX_FRAME}  # the `websockets` default the older SDKs ran with
    realtime_api = client.realtime if shape == "ga" else client.beta.realtime
    async with realtime_api.connect(model="openrealtime-local", websocket_connection_options=options) as connection:
        yield Realtime(connection, shape)


def assert_answered(done: dict) -> None:
    """A response that ran to its end: finished, or stopped at the token limit (the embedded model
    samples at temperature 0.6 and sometimes talks until ``max_response_tokens``)."""
    response = done["response"]
    if response["status"] == "incomplete":
        assert response["status_details"] == {"type": "incomplete", "reason": "max_output_tokens"}, response
    else:
        assert response["status"] == "completed" and response["status_details"] is None, response
    assert response["usage"]["output_tokens"] > 0
