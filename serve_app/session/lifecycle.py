"""Starting, resuming (taking over from a dropped socket) and stopping a session."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

from pydantic import ValidationError

from deployments.llm import ChatMessage, ToolCall
from serve_app.session.audio_input import InputResampler
from serve_app.session.config import SessionConfig
from serve_app.session.events import Disconnected, SessionResumed, SessionStarted, StartConversation, State
from serve_app.store import StoredMessage

logger = logging.getLogger(__name__)

RESUME_MESSAGES = 10
TAKE_OVER_TIMEOUT_S = 10.0


class SessionLifecycle:
    """Part of Session (serve_app/session/engine.py); the state it uses is made in Session.__init__."""

    async def _start(self, command: StartConversation) -> None:
        try:
            config = SessionConfig.model_validate(command.config or {})
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            self.error(f"invalid config: {where}: {first['msg']}", "session", "invalid_config")
            return
        if self.response is not None:
            await self._barge_in("manual")
        session_id = command.session_id or uuid.uuid4().hex
        await self._take_over(session_id)
        stored = await self.store.get_session(session_id)
        if stored is None:
            await self.store.create_session(session_id, config.wire(), state=State.IDLE.value)
        else:
            await self.store.update_config(session_id, config.wire())
            await self._load_history(session_id)
        self.session_id, self.config = session_id, config
        self._open_audio()
        self.emit(SessionStarted(session_id, config.wire()))
        self.state = State.IDLE
        await self._set_state(State.LISTENING)

    async def _resume(self, session_id: str) -> None:
        stored = await self.store.get_session(session_id)
        if stored is None:
            self.error(f"no session {session_id!r} to resume", "session", "session_not_found")
            return
        if self.response is not None:
            await self._barge_in("manual")
        await self._take_over(session_id)
        stored = await self.store.get_session(session_id)
        try:
            self.config = SessionConfig.model_validate(stored.config)
        except ValidationError:
            self.config = SessionConfig()
        self.session_id = session_id
        await self._load_history(session_id)
        # a turn in flight when the socket dropped cannot continue: resume ready to listen
        state = State.IDLE if stored.state == State.IDLE.value else State.LISTENING
        self.state = state
        await self.store.set_state(session_id, state.value)
        self._open_audio()
        last = await self.store.last_messages(session_id, RESUME_MESSAGES)
        self.emit(SessionResumed(session_id, state, [message_wire(m) for m in last]))

    async def _take_over(self, session_id: str) -> None:
        """A socket that dropped may still be storing its last words: let it finish first."""
        previous = self.registry.get(session_id)
        if previous is not None and previous is not self:
            previous.submit(Disconnected())
            try:
                await asyncio.wait_for(previous.closed.wait(), TAKE_OVER_TIMEOUT_S)
            except TimeoutError:
                logger.warning("session %s: previous socket did not close in time", session_id)
        self.registry[session_id] = self

    async def _load_history(self, session_id: str) -> None:
        self.context.messages = [as_chat(m) for m in await self.store.messages(session_id)]

    def _open_audio(self) -> None:
        self._resampler = InputResampler(self.config.input_sample_rate)
        if self._vad_stream is None and self.vad_ticker is not None:
            self._vad_stream = self.vad_ticker.open_stream(self.submit)
        self._detector.reset()

    async def _stop(self) -> None:
        await self._drop_speculation("stopped")
        if self.response is not None:
            await self._barge_in("manual")
        await self._set_state(State.IDLE)

    async def _on_disconnect(self) -> None:
        await self._drop_speculation("disconnected")
        if self.response is not None:
            await self._cancel_response(reason=None)
        if self._vad_stream is not None:
            self._vad_stream.close()
        if self.session_id and self.state not in (State.IDLE, State.LISTENING):
            await self.store.set_state(self.session_id, State.LISTENING.value)


def as_chat(message: StoredMessage) -> ChatMessage:
    calls = [ToolCall(**c) for c in message.tool_calls] if message.tool_calls else None
    return ChatMessage(role=message.role, content=message.content, tool_calls=calls,
                       tool_call_id=message.tool_call_id)


def message_wire(message: StoredMessage) -> dict[str, Any]:
    return {"role": message.role, "content": message.content, "status": message.status,
            "createdAt": message.created_at}
