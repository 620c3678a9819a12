"""One response's event sequence: created, output items, content parts, deltas, the dones, response.done.

Order (as OpenAI and LiveKit document it): response.created -> output_item.added ->
conversation.item.added -> content_part.added -> transcript/text and audio deltas ->
output_audio.done -> output_audio_transcript.done -> content_part.done -> output_item.done ->
conversation.item.done -> response.done. A spoken preamble and function calls are separate output
items, each closed before the next one opens.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from serve_app.protocols.openai_realtime import server_events as se
from serve_app.protocols.openai_realtime.audio import delta_pieces, duration_ms, from_pcm16
from serve_app.protocols.openai_realtime.items import (
    Conversation,
    Item,
    assistant_item,
    assistant_part,
    function_call_item,
    new_id,
)

CANCEL_REASONS = {"user_speech": "turn_detected", "manual": "client_cancelled"}


@dataclass
class ResponseParams:
    """What a response was asked to be: the session's settings with response.create's overrides."""

    speaks: bool
    voice: str
    output_format: dict[str, Any]
    max_output_tokens: int | str
    metadata: dict[str, str] | None = None
    event_id: str | None = None  # the response.create that asked for it


@dataclass
class _Output:
    item: Item
    index: int
    text: str = ""  # transcript (audio) or text so far
    audio_bytes: int = 0


@dataclass
class ResponseStream:
    id: str
    message_id: str  # the engine's reply message id: the id of its assistant message item
    params: ResponseParams
    conversation: Conversation
    outputs: list[_Output] = field(default_factory=list)
    _message: _Output | None = None

    def created(self) -> list[se.ServerEvent]:
        return [se.ResponseCreated(response=self._object("in_progress"))]

    # ---- content -----------------------------------------------------------------------

    def text(self, delta: str) -> list[se.ServerEvent]:
        events = self._open_message()
        out = self._message
        out.text += delta
        kind = se.OutputAudioTranscriptDelta if self.params.speaks else se.OutputTextDelta
        return events + [kind(delta=delta, **self._part_ids(out))]

    def audio(self, pcm16: bytes) -> list[se.ServerEvent]:
        if not self.params.speaks:
            return []
        events = self._open_message()
        out = self._message
        wire_format = self.params.output_format["type"]
        payload = from_pcm16(pcm16, wire_format)
        out.audio_bytes += len(payload)
        self.conversation.entries[out.item.id].audio_ms = duration_ms(out.audio_bytes, wire_format)
        return events + [se.OutputAudioDelta(delta=piece, **self._part_ids(out)) for piece in delta_pieces(payload)]

    def function_call(self, call_id: str, name: str, args: Any) -> list[se.ServerEvent]:
        events = self._close_message("completed")
        arguments = args if isinstance(args, str) else json.dumps(args)
        item = function_call_item(new_id("item"), call_id, name, "", "in_progress")
        out = _Output(item, len(self.outputs))
        self.outputs.append(out)
        previous = self.conversation.add(item, engine_ref=call_id)
        ids = {"response_id": self.id, "item_id": item.id, "output_index": out.index, "call_id": call_id}
        events += [se.OutputItemAdded(response_id=self.id, output_index=out.index, item=item.wire()),
                   se.ItemAdded(previous_item_id=previous, item=item.wire()),
                   se.FunctionCallArgumentsDelta(delta=arguments, **ids),
                   se.FunctionCallArgumentsDone(arguments=arguments, name=name, **ids)]
        item.arguments, item.status = arguments, "completed"
        events += [se.OutputItemDone(response_id=self.id, output_index=out.index, item=item.wire()),
                   se.ItemDone(previous_item_id=previous, item=item.wire())]
        return events

    # ---- the end -------------------------------------------------------------------------

    def done(self, status: str, *, reason: str | None = None, error: dict[str, Any] | None = None,
             input_tokens: int = 0, output_tokens: int = 0) -> list[se.ServerEvent]:
        events = self._close_message("completed" if status == "completed" else "incomplete")
        details: dict[str, Any] | None = None
        if status == "cancelled":
            details = {"type": "cancelled", "reason": CANCEL_REASONS.get(reason or "", "client_cancelled")}
        elif status == "incomplete":
            details = {"type": "incomplete", "reason": "max_output_tokens"}
        elif status == "failed":
            details = {"type": "failed", "error": error}
        usage = _usage(input_tokens, output_tokens)
        return events + [se.ResponseDone(response=self._object(status, details, usage))]

    # ---- helpers -------------------------------------------------------------------------

    def _open_message(self) -> list[se.ServerEvent]:
        if self._message is not None:
            return []
        item = assistant_item(self.message_id, self.params.speaks)
        out = self._message = _Output(item, len(self.outputs))
        self.outputs.append(out)
        previous = self.conversation.add(item)
        part = {"type": "audio", "transcript": ""} if self.params.speaks else {"type": "text", "text": ""}
        return [se.OutputItemAdded(response_id=self.id, output_index=out.index, item=item.wire()),
                se.ItemAdded(previous_item_id=previous, item=item.wire()),
                se.ContentPartAdded(part=part, **self._part_ids(out))]

    def _close_message(self, status: str) -> list[se.ServerEvent]:
        out, self._message = self._message, None
        if out is None:
            return []
        ids = self._part_ids(out)
        if self.params.speaks:
            part = {"type": "audio", "transcript": out.text}
            events: list[se.ServerEvent] = [se.OutputAudioDone(**ids),
                                            se.OutputAudioTranscriptDone(transcript=out.text, **ids)]
        else:
            part = {"type": "text", "text": out.text}
            events = [se.OutputTextDone(text=out.text, **ids)]
        out.item.content = [assistant_part(self.params.speaks, out.text)]
        out.item.status = status
        previous = self.conversation.previous_of(out.item.id)
        return events + [se.ContentPartDone(part=part, **ids),
                         se.OutputItemDone(response_id=self.id, output_index=out.index, item=out.item.wire()),
                         se.ItemDone(previous_item_id=previous, item=out.item.wire())]

    def _part_ids(self, out: _Output) -> dict[str, Any]:
        return {"response_id": self.id, "item_id": out.item.id, "output_index": out.index, "content_index": 0}

    def _object(self, status: str, details: dict[str, Any] | None = None,
                usage: dict[str, Any] | None = None) -> dict[str, Any]:
        return {
            "object": "realtime.response",
            "id": self.id,
            "status": status,
            "status_details": details,
            "output": [out.item.wire() for out in self.outputs],
            "conversation_id": self.conversation.id,
            "output_modalities": ["audio"] if self.params.speaks else ["text"],
            "max_output_tokens": self.params.max_output_tokens,
            "audio": {"output": {"format": self.params.output_format, "voice": self.params.voice}},
            "metadata": self.params.metadata,
            "usage": usage,
        }


def _usage(input_tokens: int, output_tokens: int) -> dict[str, Any]:
    """LLM tokens as text tokens; the cascade has no audio tokens."""
    return {
        "total_tokens": input_tokens + output_tokens,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "input_token_details": {"text_tokens": input_tokens, "audio_tokens": 0, "image_tokens": 0,
                                "cached_tokens": 0,
                                "cached_tokens_details": {"text_tokens": 0, "audio_tokens": 0, "image_tokens": 0}},
        "output_token_details": {"text_tokens": output_tokens, "audio_tokens": 0},
    }
