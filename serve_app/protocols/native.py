"""Native protocol adapter for GET /ws: frames <-> engine commands and events, nothing else."""

from __future__ import annotations

import asyncio
import audioop
import base64
import binascii
import json
import logging
from typing import Any

from pydantic import TypeAdapter, ValidationError
from starlette.websockets import WebSocket, WebSocketDisconnect

from serve_app.protocols import native_wire as wire
from serve_app.protocols.ending import close_taken_over, end_session
from serve_app.protocols.flow import NOT_READING, NOT_READING_REASON, SocketFlow
from serve_app.protocols.native_config import NativeConfig
from serve_app.session import events as ev
from serve_app.session.engine import Session

logger = logging.getLogger(__name__)

_CLIENT = TypeAdapter(wire.ClientMessage)
# engine events for clients that manage the conversation themselves; the native wire has no form for them
_NOT_ON_THE_WIRE = (ev.UserAudioCommitted, ev.TranscriptEmpty, ev.ResponseStarted, ev.ResponseEnded,
                    ev.ReplyTruncated, ev.SentenceSent)
MAX_TEXT_FRAME_BYTES = 16 * 1024 * 1024  # base64 images; the image itself is checked after decoding
# what to send instead of an engine error's message, where the answer is a native command
_COMMAND_HINTS = {"not_started": "send start_conversation or resume_session first",
                  "empty_message": "user_message text is empty"}
RETRY_HINT = "send retry_turn to try this turn again"


def decode_base64(data: str, *, what: str) -> bytes:
    if data.startswith("data:"):
        _, _, data = data.partition(",")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as error:
        raise ValueError(f"{what} is not valid base64: {error}") from error


def error_text(event: ev.ErrorEvent) -> str:
    """An engine error in native words: the command that helps, where there is one."""
    if event.code in _COMMAND_HINTS:
        return _COMMAND_HINTS[event.code]
    return f"{event.message}; {RETRY_HINT}" if event.retryable else event.message


class NativeAdapter:
    """One socket's translation layer; the session does the thinking."""

    def __init__(self, websocket: WebSocket, session: Session) -> None:
        self.websocket = websocket
        self.session = session
        self.flow = SocketFlow(session)

    def _transport(self) -> dict[str, Any]:
        """This protocol's audio settings, as the session holds them (started or resumed)."""
        return self.session.config.transport

    # ---- inbound -----------------------------------------------------------------------

    def _reject(self, message: str, code: str, phase: str = "protocol") -> None:
        self.session.error(message, phase, code)

    def _audio(self, payload: bytes) -> None:
        if len(payload) > self.session.options.max_audio_frame_bytes:
            self._reject(f"audio frame of {len(payload)} bytes is over the "
                         f"{self.session.options.max_audio_frame_bytes} byte limit", "frame_too_large", "audio")
            return
        if self._transport().get("audioFormat") == "mulaw":
            payload = audioop.ulaw2lin(payload, 2)
        self.session.submit(ev.AudioIn(payload))

    def on_text(self, text: str) -> None:
        if len(text) > MAX_TEXT_FRAME_BYTES:
            self._reject("message too large", "frame_too_large")
            return
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as error:
            self._reject(f"malformed JSON: {error.msg} at position {error.pos}", "invalid_json")
            return
        except RecursionError:
            self._reject("JSON nested too deeply", "invalid_json")
            return
        if not isinstance(raw, dict) or not isinstance(raw.get("type"), str):
            self._reject('every message must be a JSON object with a string "type"', "invalid_message")
            return
        if raw["type"] not in wire.CLIENT_TYPES:
            self._reject(f"unknown message type {raw['type']!r}", "unknown_type")
            return
        try:
            message = _CLIENT.validate_python(raw)
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(p) for p in first["loc"][1:]) or "message"
            self._reject(f"invalid {raw['type']}: {where}: {first['msg']}", "invalid_message")
            return
        self._dispatch(message)

    def _dispatch(self, message: Any) -> None:
        submit = self.session.submit
        if isinstance(message, wire.AudioChunkMsg):
            try:
                self._audio(decode_base64(message.audio, what="audio"))
            except ValueError as error:
                self._reject(str(error), "bad_base64", "audio")
        elif isinstance(message, wire.UploadImageMsg):
            try:
                submit(ev.ImageIn(decode_base64(message.image, what="image"), message.prompt))
            except ValueError as error:
                self._reject(str(error), "bad_base64", "vision")
        elif isinstance(message, wire.StartConversationMsg):
            try:
                config = NativeConfig.model_validate(message.config or {})
            except ValidationError as error:
                first = error.errors()[0]
                where = ".".join(str(p) for p in first["loc"])
                self._reject(f"invalid config: {where}: {first['msg']}", "invalid_config", "session")
                return
            submit(ev.StartConversation(message.session_id, config.settings(), message.resume_token))
        elif isinstance(message, wire.StopConversationMsg):
            submit(ev.StopConversation())
        elif isinstance(message, wire.InterruptMsg):
            submit(ev.Interrupt())
        elif isinstance(message, wire.UserMessageMsg):
            submit(ev.UserText(message.text))
        elif isinstance(message, wire.ResumeSessionMsg):
            submit(ev.ResumeSession(message.session_id, message.resume_token))
        elif isinstance(message, wire.ToolResultMsg):
            submit(ev.ToolResult(message.call_id, message.result))
        elif isinstance(message, wire.PingMsg):
            submit(ev.Ping(message.t))
        elif isinstance(message, wire.RetryTurnMsg):
            submit(ev.RetryTurn())

    # ---- outbound ----------------------------------------------------------------------

    def render(self, event: ev.Event) -> dict[str, Any] | bytes | None:
        if isinstance(event, _NOT_ON_THE_WIRE):
            return None
        if isinstance(event, ev.AudioOut):
            pcm, transport = event.pcm16, self._transport()
            if transport.get("audioFormat") == "mulaw":
                pcm = audioop.lin2ulaw(pcm, 2)
            if transport.get("binaryAudio"):
                return pcm
            return wire.AudioChunkOutMsg(audio=base64.b64encode(pcm).decode(), chunk_index=event.chunk_index).wire()
        match event:
            case ev.SessionStarted():
                out: wire._Out = wire.SessionStartedMsg(session_id=event.session_id, resume_token=event.resume_token,
                                                        config=NativeConfig.of(event.settings).wire())
            case ev.SessionResumed():
                out = wire.SessionResumedMsg(session_id=event.session_id, state=event.state.value,
                                             messages=event.messages, resume_token=event.resume_token)
            case ev.StateChanged():
                out = wire.StateChangeMsg(state=event.state.value)
            case ev.SpeechStarted():
                out = wire.SpeechStartedMsg(audio_ms=event.audio_ms)
            case ev.SpeechStopped():
                out = wire.SpeechStoppedMsg(audio_ms=event.audio_ms)
            case ev.TranscriptPartial():
                out = wire.TranscriptPartialMsg(text=event.text)
            case ev.TranscriptFinal():
                out = wire.TranscriptFinalMsg(text=event.text)
            case ev.LlmToken():
                out = wire.LlmTokenMsg(token=event.token, done=event.done)
            case ev.LlmComplete():
                out = wire.LlmCompleteMsg(full_text=event.full_text)
            case ev.AudioComplete():
                out = wire.AudioCompleteMsg()
            case ev.ToolCallStarted():
                out = wire.ToolCallStartMsg(tool_name=event.tool_name, args=event.args, call_id=event.call_id)
            case ev.ToolCallFinished():
                out = wire.ToolCallResultMsg(tool_name=event.tool_name, result=event.result, call_id=event.call_id)
            case ev.VisionResult():
                out = wire.VisionResultMsg(description=event.description)
            case ev.Interrupted():
                out = wire.InterruptedMsg(reason=event.reason)
            case ev.StopSpeaking():
                out = wire.StopSpeakingMsg()
            case ev.ErrorEvent():
                out = wire.ErrorMsg(message=error_text(event), phase=event.phase, code=event.code)
            case ev.Pong():
                out = wire.PongMsg(t=event.t)
            case _:
                raise TypeError(f"no wire form for {type(event).__name__}")
        return out.wire()

    async def _write(self) -> None:
        while (item := await self.session.outbox.get()) is not None:
            if isinstance(item.event, ev.SessionTakenOver):
                await close_taken_over(self.websocket)
                continue
            frame = self.render(item.event)
            if frame is None:
                continue
            sending = self.websocket.send_bytes(frame) if isinstance(frame, bytes) else \
                self.websocket.send_text(json.dumps(frame))
            if not await self.flow.send(sending):
                return  # the client is not reading: run() closes the socket

    # ---- the socket's life -------------------------------------------------------------

    async def _read(self) -> None:
        try:
            while True:
                message = await self.websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                if not await self.flow.admit():
                    if (notice := self.flow.rate_notice()) is not None:
                        self._reject(notice, "rate_limit_exceeded")
                    continue
                try:
                    if message.get("bytes") is not None:
                        self._audio(message["bytes"])
                    elif message.get("text") is not None:
                        self.on_text(message["text"])
                except Exception:  # a frame this adapter did not foresee must not cost the client its socket
                    logger.exception("native frame could not be handled")
                    self._reject("internal error while reading this message; the session continues",
                                 "internal_error")
                await self.flow.room()  # backpressure: read on once the session has room
        except WebSocketDisconnect:
            pass

    async def run(self) -> None:
        engine = asyncio.get_running_loop().create_task(self.session.run())
        writer = asyncio.get_running_loop().create_task(self._write())
        close = None
        try:
            if await self.flow.read_until_stalled(self._read()):
                close = (NOT_READING, NOT_READING_REASON)
        finally:
            # shielded: a server that cancels the handler on disconnect must not cut the final writes
            await asyncio.shield(end_session(self.session, self.websocket, engine, writer, close))
