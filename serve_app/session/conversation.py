"""The conversation: what the LLM sees, and the only door to the session's rows in the store.

Everything said or answered is written here before it is announced, so a socket that drops can
resume from the store. Stages ask this object to remember things; none of them touches the store.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from deployments.llm import ChatMessage, ToolCall
from serve_app.session.config import SessionSettings
from serve_app.session.context import ConversationContext
from serve_app.session.events import State
from serve_app.session.ownership import digest, key_digest, key_matches, new_token
from serve_app.store import SessionStore, StoredMessage, StoredSession


class Conversation:
    def __init__(self, store: SessionStore, context: ConversationContext) -> None:
        self.store = store
        self.context = context
        self.session_id: str | None = None
        self.config = SessionSettings()
        self.turn_id: int | None = None  # the store's row for the turn being answered
        self._token_hash: str | None = None  # the digest of the resume token this connection last got

    # ---- the session's row ---------------------------------------------------------------

    async def create(self, session_id: str, config: SessionSettings, api_key: str | None = None) -> str | None:
        """A new session owned by this client (and ``api_key``); its resume token, or None if the id is taken."""
        token = new_token()
        try:
            await self.store.create_session(session_id, config.stored(), state=State.IDLE.value,
                                            resume_token_hash=digest(token), owner_key_hash=key_digest(api_key))
        except ValueError:
            return None
        self.session_id, self.config, self._token_hash = session_id, config, digest(token)
        self.context.messages = []
        return token

    async def reopen(self, session_id: str, config: SessionSettings) -> None:
        """Start a claimed stored session again with a new ``config``, keeping its history."""
        await self.store.update_config(session_id, config.stored())
        await self._load_history(session_id)
        self.session_id, self.config = session_id, config

    async def exists(self, session_id: str) -> bool:
        return await self.store.get_session(session_id) is not None

    async def claim(self, session_id: str, token: str | None, api_key: str | None = None) -> str | None:
        """A new resume token for stored ``session_id`` if ``token`` is its current one and ``api_key`` the key
        that created it; None, with nothing changed, otherwise. The connection that holds the session
        (``session_id`` is this conversation's) needs no token: it renews its own."""
        stored = await self.store.get_session(session_id)
        if stored is None or stored.resume_token_hash is None:
            return None  # unknown, or stored before sessions had owners: nobody can prove it is theirs
        if session_id == self.session_id and self._token_hash is not None:
            current = self._token_hash
        elif token and key_matches(stored, api_key):
            current = digest(token)
        else:
            return None
        fresh = new_token()
        if not await self.store.rotate_resume_token(session_id, current, digest(fresh)):
            return None
        self._token_hash = digest(fresh)
        return fresh

    async def resume(self, session_id: str) -> StoredSession:
        """Take up a stored session: its config (the defaults if it no longer parses) and history."""
        stored = await self.store.get_session(session_id)
        try:
            self.config = SessionSettings.from_stored(stored.config)
        except ValidationError:
            self.config = SessionSettings()
        self.session_id = session_id
        await self._load_history(session_id)
        return stored

    async def configure(self, config: SessionSettings) -> None:
        self.config = config
        await self.store.update_config(self.session_id, config.stored())

    async def record_state(self, state: State) -> None:
        if self.session_id:
            await self.store.set_state(self.session_id, state.value)

    async def last_messages(self, limit: int) -> list[StoredMessage]:
        return await self.store.last_messages(self.session_id, limit)

    async def _load_history(self, session_id: str) -> None:
        stored = await self.store.last_messages(session_id, self.context.max_messages)  # older: never sent again
        self.context.messages = [as_chat(m) for m in stored]

    # ---- turns and messages --------------------------------------------------------------

    async def start_turn(self) -> None:
        self.turn_id = await self.store.start_turn(self.session_id)

    async def add(self, role: str, text: str, message_id: str | None) -> None:
        """A user or system message, stored and put in the context."""
        await self.store.add_message(self.session_id, role, text, turn_id=self.turn_id)
        self.context.add(ChatMessage(role=role, content=text), message_id)

    async def add_image(self, image: bytes, mime: str, prompt: str | None, description: str) -> None:
        await self.store.add_image(self.session_id, image, mime, prompt, description)

    async def add_client_message(self, message: ChatMessage, message_id: str, after: str | None) -> None:
        """A message a client put into the conversation itself (a tool result included)."""
        calls = [c.model_dump() for c in message.tool_calls] if message.tool_calls else None
        await self.store.add_message(self.session_id, message.role, message.content or "", tool_calls=calls,
                                     tool_call_id=message.tool_call_id, turn_id=self.turn_id)
        if message.role == "tool" and message.tool_call_id:
            try:
                await self.store.finish_tool_call(self.session_id, message.tool_call_id, json.dumps(message.content),
                                                  "ok")
            except LookupError:
                pass  # not a call of this session's (a client replaying its history, or naming another's call)
        self.context.insert(message, message_id, after)

    async def store_reply(self, text: str, status: str = "complete") -> int:
        message = await self.store.add_message(self.session_id, "assistant", text, status=status,
                                               turn_id=self.turn_id)
        return message.id

    async def update_reply(self, reply_id: int, **fields: Any) -> None:
        await self.store.update_message(reply_id, **fields)

    async def store_tool_call(self, call: ToolCall) -> None:
        await self.store.add_tool_call(self.session_id, call.id, call.name, call.arguments)

    async def finish_tool_call(self, call_id: str, result: Any, status: str) -> None:
        """``status``: ok, error (the call failed) or cancelled (its response was)."""
        await self.store.finish_tool_call(self.session_id, call_id, json.dumps(result, default=str), status)

    async def cancel_pending_tool_calls(self) -> int:
        """The socket is gone: no call of this session will get its result any more."""
        return await self.store.cancel_pending_tool_calls(
            self.session_id, json.dumps({"error": "cancelled: the client disconnected"}))

    async def record_turn(self, interrupted: bool, prompt_tokens: int, cached_tokens: int,
                          times: dict[str, float]) -> None:
        if self.turn_id is not None:
            await self.store.record_turn(self.turn_id, interrupted=interrupted, prompt_tokens=prompt_tokens,
                                         cached_tokens=cached_tokens, **times)


def as_chat(message: StoredMessage) -> ChatMessage:
    calls = [ToolCall(**c) for c in message.tool_calls] if message.tool_calls else None
    return ChatMessage(role=message.role, content=message.content, tool_calls=calls,
                       tool_call_id=message.tool_call_id)


def message_wire(message: StoredMessage) -> dict[str, Any]:
    return {"role": message.role, "content": message.content, "status": message.status,
            "createdAt": message.created_at}
