"""Commands from clients that manage turns and the conversation themselves (the OpenAI Realtime adapter)."""

from __future__ import annotations

import json

from pydantic import ValidationError

from serve_app.session.audio_input import InputResampler
from serve_app.session.config import SessionConfig
from serve_app.session.events import AddMessage, Configure, ReplyTruncated, State, TruncateReply
from serve_app.session.turn_detection import TurnDetector


class ConversationEdits:
    """Part of Session (serve_app/session/engine.py); the state it uses is made in Session.__init__."""

    async def _configure(self, command: Configure) -> None:
        if command.config:
            try:
                config = SessionConfig.model_validate({**self.config.wire(), **command.config})
            except ValidationError as error:
                first = error.errors()[0]
                where = ".".join(str(p) for p in first["loc"])
                self.error(f"invalid config: {where}: {first['msg']}", "session", "invalid_config")
                return
            if config.input_sample_rate != self.config.input_sample_rate:
                self._resampler = InputResampler(config.input_sample_rate)
            self.config = config
            await self.store.update_config(self.session_id, config.wire())
        if command.replies is not None:
            self.replies = command.replies
        if command.turns is not None:
            self.turns = command.turns
            self.turn_options = command.turns.detection or self.options.turn_detection
            self._detector = TurnDetector(self.turn_options, smart_turn_available=self.smart_turn is not None)
            if self._vad_degraded_reported:
                self._detector.smart_turn = False
            threshold = self.options.barge_in if self.state is State.SPEAKING else self.turn_options
            self._detector.set_sensitivity(threshold.threshold, threshold.min_speech_ms)

    async def _add_message(self, command: AddMessage) -> None:
        message = command.message
        calls = [c.model_dump() for c in message.tool_calls] if message.tool_calls else None
        await self.store.add_message(self.session_id, message.role, message.content or "", tool_calls=calls,
                                     tool_call_id=message.tool_call_id, turn_id=self.turn_id)
        if message.role == "tool" and message.tool_call_id:
            try:
                await self.store.finish_tool_call(message.tool_call_id, json.dumps(message.content), "ok")
            except LookupError:
                pass  # a result for a call this server never made (a client replaying its history)
        self.context.insert(message, command.message_id, command.after)

    async def _truncate(self, command: TruncateReply) -> None:
        if self.response is not None and self.response.message_id == command.message_id:
            await self._barge_in("manual")  # truncating the reply being spoken stops it first
        response = self._replies.get(command.message_id)
        message = self.context.find(command.message_id)
        if response is None or message is None:
            self.error(f"no spoken reply {command.message_id!r} to truncate", "session", "unknown_message",
                       ref=command.message_id)
            return
        audio_ms = max(0, min(command.audio_ms, int(response.audio_sent_ms)))
        text = response.text_at(audio_ms)
        message.content = text
        if response.reply_message_id is not None:
            status = "complete" if text == response.full_text else "interrupted"
            await self.store.update_message(response.reply_message_id, content=text, status=status,
                                            full_content=response.full_text)
        self.emit(ReplyTruncated(command.message_id, audio_ms, text))
