"""Conversation items: the wire model, the ordered conversation, and what an item means to the engine."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from deployments.llm import ChatMessage, ToolCall
from serve_app.protocols.openai_realtime.errors import ITEM_NOT_FOUND, ProtocolError


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:20]}"


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["input_text", "input_audio", "input_image", "output_text", "output_audio", "text", "audio",
                  "item_reference"]
    text: str | None = None
    audio: str | None = None
    transcript: str | None = None
    image_url: str | None = None
    detail: Literal["auto", "low", "high"] | None = None
    id: str | None = None

    def wire(self) -> dict[str, Any]:
        """The part as OpenAI sends it: the fields of its type, those it always carries even when null
        (an ``input_audio`` part has ``transcript: null`` until it is transcribed). Strict clients
        need that: the JS Agents SDK's history schema requires ``transcript`` on audio parts."""
        always, when_set = PART_FIELDS[self.type]
        fields = {name: getattr(self, name) for name in always}
        fields.update({name: getattr(self, name) for name in when_set if getattr(self, name) is not None})
        return {"type": self.type, **fields}


# per part type: the fields always sent (null when unknown) and those sent only when they have a value
PART_FIELDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "input_text": (("text",), ()),
    "input_audio": (("transcript",), ("audio",)),
    "input_image": ((), ("image_url", "detail")),
    "output_text": (("text",), ()),
    "output_audio": (("transcript",), ("audio",)),
    "text": (("text",), ()),
    "audio": (("transcript",), ("audio",)),
    "item_reference": (("id",), ()),
}

# per item type, after id, object and type (never null: the JS SDK's item schema allows no null here)
ITEM_FIELDS: dict[str, tuple[str, ...]] = {
    "message": ("status", "role"),
    "function_call": ("status", "call_id", "name", "arguments"),
    "function_call_output": ("status", "call_id", "output"),
}


class Item(BaseModel):
    """A conversation item as the wire carries it (GA names)."""

    model_config = ConfigDict(extra="ignore")

    id: str | None = None
    object: Literal["realtime.item"] = "realtime.item"
    type: Literal["message", "function_call", "function_call_output"]
    status: Literal["completed", "incomplete", "in_progress"] | None = None
    role: Literal["user", "assistant", "system"] | None = None
    content: list[ContentPart] | None = None
    call_id: str | None = None
    name: str | None = None
    arguments: str | None = None
    output: str | None = None

    def wire(self) -> dict[str, Any]:
        """The item with the fields OpenAI always sends for its type (``content`` for messages)."""
        fields: dict[str, Any] = {"id": self.id, "object": self.object, "type": self.type}
        fields.update({name: getattr(self, name) for name in ITEM_FIELDS[self.type] if getattr(self, name) is not None})
        if self.type == "message":
            fields["content"] = [part.wire() for part in self.content or []]
        return fields

    def text(self) -> str:
        """What a message says: its text parts, or its audio's transcript."""
        parts = [p.text if p.type in ("input_text", "output_text", "text") else p.transcript
                 for p in self.content or [] if p.type != "input_image"]
        return " ".join(p for p in parts if p)


def user_audio_item(item_id: str) -> Item:
    return Item(id=item_id, type="message", role="user", status="completed",
                content=[ContentPart(type="input_audio", transcript=None)])


def assistant_item(item_id: str, speaks: bool, status: str = "in_progress") -> Item:
    return Item(id=item_id, type="message", role="assistant", status=status, content=[])


def assistant_part(speaks: bool, text: str) -> ContentPart:
    return ContentPart(type="output_audio", transcript=text) if speaks else ContentPart(type="output_text", text=text)


def function_call_item(item_id: str, call_id: str, name: str, arguments: str, status: str) -> Item:
    return Item(id=item_id, type="function_call", status=status, call_id=call_id, name=name, arguments=arguments)


def chat_message(item: Item) -> ChatMessage | None:
    """The LLM-context message for an item a client created (None: nothing for the model, e.g. image only)."""
    if item.type == "function_call":
        call = ToolCall(id=item.call_id or item.id, name=item.name or "", arguments=item.arguments or "{}")
        return ChatMessage(role="assistant", tool_calls=[call])
    if item.type == "function_call_output":
        return ChatMessage(role="tool", tool_call_id=item.call_id, content=item.output or "")
    text = item.text()
    if not text:
        return None
    return ChatMessage(role=item.role or "user", content=text)


@dataclass
class Entry:
    item: Item
    engine_ref: str  # the engine's name for it: the message id, or the call id of a server-made call
    audio_ms: float = 0.0  # assistant audio sent for it, for truncation checks


class Conversation:
    """The items of the one default conversation, in order: the last ``max_items`` of them. Older ones
    are forgotten (``item_not_found`` afterwards), as the LLM context forgets old turns."""

    def __init__(self, max_items: int = 1000) -> None:
        self.id = new_id("conv")
        self.entries: dict[str, Entry] = {}  # insertion-ordered: dict order is conversation order
        self._order: list[str] = []
        self.max_items = max_items

    def last_id(self) -> str | None:
        return self._order[-1] if self._order else None

    def add(self, item: Item, engine_ref: str | None = None, previous_item_id: str | None = None) -> str | None:
        """Add after ``previous_item_id`` ("root": first; None: last); returns the id it now follows."""
        if previous_item_id is None:
            previous = self.last_id()
            self._order.append(item.id)
        elif previous_item_id == "root":
            previous = None
            self._order.insert(0, item.id)
        else:
            self.require(previous_item_id)
            previous = previous_item_id
            self._order.insert(self._order.index(previous_item_id) + 1, item.id)
        self.entries[item.id] = Entry(item, engine_ref or item.id)
        while len(self._order) > self.max_items:
            del self.entries[self._order.pop(0)]
        return previous

    def previous_of(self, item_id: str) -> str | None:
        index = self._order.index(item_id)
        return self._order[index - 1] if index else None

    def get(self, item_id: str) -> Entry | None:
        return self.entries.get(item_id)

    def require(self, item_id: str) -> Entry:
        entry = self.entries.get(item_id)
        if entry is None:
            raise ProtocolError(f"Item with item_id not found: {item_id}", ITEM_NOT_FOUND, param="item_id")
        return entry

    def delete(self, item_id: str) -> Entry:
        entry = self.require(item_id)
        del self.entries[item_id]
        self._order.remove(item_id)
        return entry
