"""The OpenAI Realtime adapter for one socket: client events -> engine commands, engine events -> server events.

It knows the wire and the conversation's item ids, nothing about models. The engine decides
turns and runs responses; this side keeps the Realtime session object, the item list, and the
sequence of events each response owes the client.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from pydantic import ValidationError

from serve_app.protocols.ending import finish_session
from serve_app.protocols.flow import NOT_READING, NOT_READING_REASON, SocketFlow
from serve_app.protocols.openai_realtime import client_events as ce
from serve_app.protocols.openai_realtime import server_events as se
from serve_app.protocols.openai_realtime.audio import decode_base64, duration_ms, to_pcm16
from serve_app.protocols.openai_realtime.beta import client_event_to_ga, event_to_beta
from serve_app.protocols.openai_realtime.errors import (
    ACTIVE_RESPONSE,
    APPEND_TOO_LARGE,
    BUFFER_FULL,
    CANCEL_NOT_ACTIVE,
    COMMIT_EMPTY,
    DUPLICATE_ITEM,
    INVALID_JSON,
    INVALID_VALUE,
    RATE_LIMITED,
    SERVER_ERROR,
    UNSUPPORTED,
    UNSUPPORTED_CONTENT_TYPE,
    ProtocolError,
    engine_error,
)
from serve_app.protocols.openai_realtime.handshake import Handshake
from serve_app.protocols.openai_realtime.items import (
    Conversation,
    Item,
    chat_message,
    new_id,
    user_audio_item,
)
from serve_app.protocols.openai_realtime.responses import ResponseParams, ResponseStream
from serve_app.protocols.openai_realtime.session_config import (
    RealtimeSession,
    engine_max_tokens,
    engine_settings,
    engine_tool_choice,
    engine_tools,
    engine_voice,
    updated,
)
from serve_app.protocols.openai_realtime.transport import EventTransport, Playback
from serve_app.session import events as ev
from serve_app.session.engine import Session
from serve_app.session.limits import LimitExceeded, check_instructions, check_text, check_tools
from serve_app.session.policy import ResponseOverrides

logger = logging.getLogger(__name__)

MAX_FRAME_BYTES = 1024 * 1024  # clients built on `websockets` refuse larger frames by default
MIN_COMMIT_MS = 100


class RealtimeAdapter:
    def __init__(self, transport: EventTransport, session: Session, handshake: Handshake,
                 playback: Playback | None = None) -> None:
        self.transport, self.session, self.beta = transport, session, handshake.beta
        self.playback = playback  # WebRTC: audio goes out on the media track, not in events
        self.limits = session.options.limits
        self.flow = SocketFlow(session)
        self.realtime = RealtimeSession(model=handshake.model or "openrealtime",
                                        instructions=session.options.instructions)
        self.conversation = Conversation(max_items=self.limits.items)
        self.active: ResponseStream | None = None
        self.requested: dict[str, ResponseParams] = {}  # response.create tag -> params, until it starts
        self.uncommitted_ms = 0.0
        self.user_audio_s: dict[str, float] = {}  # committed user audio items -> seconds, for transcription usage
        self._send_lock = asyncio.Lock()
        self._gone = False

    # ---- sending -----------------------------------------------------------------------

    async def send(self, *events: se.ServerEvent) -> None:
        async with self._send_lock:  # one batch at a time, so a playback event cannot cut into one
            if self.playback is not None:
                events = self.playback.outgoing(list(events))
            await self._send_batch(events)

    async def _send_batch(self, events: Any) -> None:
        for event in events:
            frame: dict[str, Any] | None = event.wire()
            if self.beta:
                frame = event_to_beta(frame)
                if frame is None:
                    continue
            text = json.dumps(frame)
            if len(text) >= MAX_FRAME_BYTES:  # every producer keeps under this; a bug must not kill clients
                logger.error("dropping a %s event of %d bytes (over the frame limit)", frame["type"], len(text))
                continue
            if self._gone:
                return
            try:
                sent = await self.flow.send(self.transport.send_text(text))
            except Exception:  # noqa: BLE001 - the client went away; the reader sees the disconnect
                sent = False
            if not sent:  # gone, or not reading (run() then closes the transport)
                self._gone = True
                return

    async def send_error(self, error: ProtocolError, event_id: str | None = None) -> None:
        await self.send(se.Error(error=se.ErrorDetail(type=error.kind, code=error.code, message=error.message,
                                                      param=error.param, event_id=event_id)))

    def session_wire(self) -> dict[str, Any]:
        return self.realtime.model_dump(mode="json")

    # ---- inbound -----------------------------------------------------------------------

    async def on_text(self, text: str) -> None:
        event_id = None
        try:
            try:
                raw = json.loads(text)
            except json.JSONDecodeError as error:
                raise ProtocolError(f"malformed JSON: {error.msg} at position {error.pos}", INVALID_JSON) from None
            except RecursionError:
                raise ProtocolError("malformed JSON: nested too deeply", INVALID_JSON) from None
            if not isinstance(raw, dict):
                raise ProtocolError("every event must be a JSON object with a type", INVALID_VALUE)
            event_id = raw.get("event_id") if isinstance(raw.get("event_id"), str) else None
            await self.handle(ce.parse(client_event_to_ga(raw) if self.beta else raw))
        except ProtocolError as error:
            await self.send_error(error, event_id)
        except Exception:  # an event this adapter did not foresee must not cost the client its socket
            logger.exception("realtime event could not be handled")
            await self.send_error(ProtocolError("internal error while handling this event; the session continues",
                                                "internal_error", kind=SERVER_ERROR), event_id)

    async def handle(self, event: Any) -> None:
        submit = self.session.submit
        match event:
            case ce.AudioAppend():
                fmt = self.realtime.audio.input.format.type
                if len(event.audio) > self.limits.append_bytes:  # checked before it is decoded
                    raise ProtocolError(f"an append of {len(event.audio)} bytes (base64) is over the "
                                        f"{self.limits.append_bytes} byte limit; send smaller chunks", APPEND_TOO_LARGE,
                                        param="audio")
                payload = decode_base64(event.audio)
                self._check_buffer(len(payload), fmt)
                self.audio_in(to_pcm16(payload, fmt), duration_ms(len(payload), fmt))
            case ce.SessionUpdate():
                session = updated(self.realtime, event.session)
                _within_limits(self.limits, session.instructions, [t.model_dump() for t in session.tools],
                               param="session")
                self.realtime = session
                submit(engine_settings(self.realtime, self.session.options.turn_detection))
                await self.send(se.SessionUpdated(session=self.session_wire()))
            case ce.AudioCommit():
                if self.uncommitted_ms < MIN_COMMIT_MS:
                    raise ProtocolError(
                        f"Error committing input audio buffer: buffer too small. Expected at least {MIN_COMMIT_MS}ms "
                        f"of audio, but buffer only has {self.uncommitted_ms:.2f}ms of audio.", COMMIT_EMPTY)
                self.uncommitted_ms = 0.0
                submit(ev.CommitAudio(new_id("item")))
            case ce.AudioClear():
                self.uncommitted_ms = 0.0
                submit(ev.ClearAudio())
                await self.send(se.BufferCleared())
            case ce.ItemCreate():
                await self._create_item(event)
            case ce.ItemRetrieve():
                await self.send(se.ItemRetrieved(item=self.conversation.require(event.item_id).item.wire()))
            case ce.ItemDelete():
                entry = self.conversation.delete(event.item_id)
                submit(ev.DeleteMessage(entry.engine_ref))
                await self.send(se.ItemDeleted(item_id=event.item_id))
            case ce.ItemTruncate():
                self._truncate(event)
            case ce.ResponseCreate():
                self._create_response(event)
            case ce.ResponseCancel():
                if self.active is None or event.response_id not in (None, self.active.id):
                    raise ProtocolError("Cancellation failed: no active response found", CANCEL_NOT_ACTIVE)
                submit(ev.Interrupt())
            case ce.OutputAudioClear():
                if self.playback is None:
                    return  # over a WebSocket the client owns playback
                if self.active is not None:  # cutting the audio off ends its response, as OpenAI does
                    submit(ev.Interrupt())
                await self.send(*self.playback.clear())

    def audio_in(self, pcm16: bytes, ms: float) -> None:
        """Microphone audio as PCM16 at the input format's rate, from an append or a call's media track."""
        self.session.submit(ev.AudioIn(pcm16))
        self.uncommitted_ms += ms

    async def _create_item(self, event: ce.ItemCreate) -> None:
        try:
            item = Item.model_validate(event.item)
        except ValidationError as error:
            raise ce.invalid(error, prefix="item.") from None
        item.id = item.id or new_id("item")
        if item.id in self.conversation.entries:
            raise ProtocolError(f"Item with id {item.id!r} already exists", DUPLICATE_ITEM, param="item.id")
        _check_item(item)
        _check_item_size(item, self.limits)
        images = [_image_bytes(p.image_url) for p in item.content or [] if p.type == "input_image"]
        for part in item.content or []:  # echoes and retrievals stay small: media live in the engine
            part.image_url = None if part.type == "input_image" else part.image_url
            part.audio = None
        after = event.previous_item_id
        engine_after = None if after is None else "" if after == "root" else self.conversation.require(after).engine_ref
        item.status = "completed"
        previous = self.conversation.add(item, previous_item_id=after)
        message = chat_message(item)
        if message is not None:
            self.session.submit(ev.AddMessage(item.id, message, engine_after))
        for image in images:
            self.session.submit(ev.ImageIn(image, item.text() or None, message_id=item.id))
        await self.send(se.ItemAdded(previous_item_id=previous, item=item.wire()),
                        se.ItemDone(previous_item_id=previous, item=item.wire()))

    def _truncate(self, event: ce.ItemTruncate) -> None:
        entry = self.conversation.require(event.item_id)
        item = entry.item
        spoken = self.active is not None and self.active.message_id == item.id and self.active.params.speaks
        if item.type != "message" or item.role != "assistant" or not (entry.audio_ms > 0 or spoken):
            raise ProtocolError("Only model output audio messages can be truncated", UNSUPPORTED_CONTENT_TYPE,
                                param="item_id")
        if event.content_index != 0:
            raise ProtocolError("content_index must be 0: a reply has one audio part", INVALID_VALUE,
                                param="content_index")
        self.session.submit(ev.TruncateReply(entry.engine_ref, event.audio_end_ms))

    def _create_response(self, event: ce.ResponseCreate) -> None:
        if self.active is not None or self.requested:
            active = self.active.id if self.active else next(iter(self.requested))
            raise ProtocolError(f"Conversation already has an active response in progress: {active}. Wait until "
                                "the response is finished before creating a new one.", ACTIVE_RESPONSE)
        try:
            request = ce.ResponseRequest.model_validate(event.response or {})
        except ValidationError as error:
            raise ce.invalid(error, prefix="response.") from None
        _within_limits(self.limits, request.instructions, request.tools, param="response")
        session = self.realtime
        output = (request.audio or {}).get("output") or {}
        modalities = request.output_modalities or session.output_modalities
        voice = output.get("voice", session.audio.output.voice)
        max_tokens = request.max_output_tokens or session.max_output_tokens
        tag = new_id("resp")
        self.requested[tag] = ResponseParams(
            speaks="audio" in modalities, voice=voice if isinstance(voice, str) else session.audio.output.voice,
            output_format=session.audio.output.format.model_dump(mode="json"),  # the session's: rates are fixed
            max_output_tokens=max_tokens,
            metadata={str(k): str(v) for k, v in request.metadata.items()} if request.metadata else None,
            event_id=event.event_id)
        overrides = ResponseOverrides(
            instructions=request.instructions,
            speak="audio" in modalities if request.output_modalities else None,
            voice=engine_voice(voice) if "voice" in output and isinstance(voice, str) else None,
            tools=engine_tools(request.tools) if request.tools is not None else None,
            tool_choice=engine_tool_choice(request.tool_choice) if request.tool_choice is not None else None,
            max_tokens=engine_max_tokens(request.max_output_tokens))
        self.session.submit(ev.CreateResponse(tag, overrides))

    # ---- outbound ------------------------------------------------------------------------

    def render(self, item: ev.Outgoing) -> list[se.ServerEvent]:
        event = item.event
        match event:
            case ev.SpeechStarted():
                return [se.SpeechStarted(audio_start_ms=event.audio_ms, item_id=event.message_id)]
            case ev.SpeechStopped():
                return [se.SpeechStopped(audio_end_ms=event.audio_ms, item_id=event.message_id)]
            case ev.UserAudioCommitted():
                return self._committed(event)
            case ev.TranscriptFinal() | ev.TranscriptEmpty():
                return self._transcribed(event.message_id, getattr(event, "text", ""))
            case ev.ResponseStarted():
                return self._response_started(event)
            case ev.LlmToken() if self.active is not None:
                return self.active.text(event.token)
            case ev.AudioOut() if self.active is not None:
                return self.active.audio(event.pcm16)
            case ev.ToolCallStarted() if self.active is not None:
                return self.active.function_call(event.call_id, event.tool_name, event.args)
            case ev.ResponseEnded():
                return self._response_ended(event)
            case ev.ReplyTruncated():
                return self._truncated(event)
            case ev.ErrorEvent():
                return self._error(event)
        return []  # state changes, pongs, partial transcripts...: nothing on this wire

    def _committed(self, event: ev.UserAudioCommitted) -> list[se.ServerEvent]:
        self.uncommitted_ms = 0.0
        item = user_audio_item(event.message_id)
        previous = self.conversation.add(item)
        self.user_audio_s[event.message_id] = (event.end_ms - event.start_ms) / 1000
        return [se.BufferCommitted(item_id=item.id, previous_item_id=previous),
                se.ItemAdded(previous_item_id=previous, item=item.wire()),
                se.ItemDone(previous_item_id=previous, item=item.wire())]

    def _transcribed(self, item_id: str, text: str) -> list[se.ServerEvent]:
        entry = self.conversation.get(item_id)
        seconds = self.user_audio_s.pop(item_id, None)
        if entry is None or seconds is None:
            return []
        entry.item.content[0].transcript = text
        if self.realtime.audio.input.transcription is None:
            return []
        # No `.delta` first: the STT is not streamed, so a delta would repeat the whole transcript and
        # clients that show deltas as interim text (LiveKit's is_final=False) get the utterance twice.
        # OpenAI sends deltas only from streaming transcription models.
        return [se.TranscriptionCompleted(item_id=item_id, transcript=text,
                                          usage={"type": "duration", "seconds": round(seconds, 3)})]

    def _response_started(self, event: ev.ResponseStarted) -> list[se.ServerEvent]:
        params = self.requested.pop(event.tag, None) if event.tag else None
        if params is None:  # a response the turn detector started
            session = self.realtime
            params = ResponseParams(speaks=session.speaks, voice=session.audio.output.voice,
                                    output_format=session.audio.output.format.model_dump(mode="json"),
                                    max_output_tokens=session.max_output_tokens)
        self.active = ResponseStream(event.tag or new_id("resp"), event.message_id, params, self.conversation)
        return self.active.created()

    def _response_ended(self, event: ev.ResponseEnded) -> list[se.ServerEvent]:
        stream = self.active
        if stream is None or stream.message_id != event.message_id:
            return []
        self.active = None
        error = None
        if event.error is not None:
            error = {"type": SERVER_ERROR, "code": event.error.code, "message": event.error.message}
        return stream.done(event.status, reason=event.reason, error=error, input_tokens=event.input_tokens,
                           output_tokens=event.output_tokens)

    def _truncated(self, event: ev.ReplyTruncated) -> list[se.ServerEvent]:
        entry = self.conversation.get(event.message_id)
        if entry is None:
            return []
        for part in entry.item.content or []:
            if part.type == "output_audio":
                part.transcript = event.text
        entry.audio_ms = min(entry.audio_ms, event.audio_ms)
        return [se.ItemTruncated(item_id=event.message_id, content_index=0, audio_end_ms=event.audio_ms)]

    def _error(self, event: ev.ErrorEvent) -> list[se.ServerEvent]:
        if event.phase == "stt" and event.ref in self.user_audio_s:
            self.user_audio_s.pop(event.ref)
            return [se.TranscriptionFailed(item_id=event.ref, error={"type": SERVER_ERROR, "code": event.code,
                                                                     "message": event.message})]
        event_id = None
        if event.ref in self.requested:  # a response.create the engine refused
            event_id = self.requested.pop(event.ref).event_id
        error = engine_error(event.message, event.phase, event.code)
        return [se.Error(error=se.ErrorDetail(type=error.kind, code=error.code, message=error.message,
                                              event_id=event_id))]

    async def _write(self) -> None:
        while (item := await self.session.outbox.get()) is not None:
            try:
                events = self.render(item)
            except Exception:
                logger.exception("could not render %s", type(item.event).__name__)
                continue
            await self.send(*events)

    # ---- the socket's life -------------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self.session.submit(ev.StartConversation(None))
        self.session.submit(engine_settings(self.realtime, self.session.options.turn_detection))
        await self.send(se.SessionCreated(session=self.session_wire()),
                        se.ConversationCreated(conversation={"id": self.conversation.id,
                                                             "object": "realtime.conversation"}))
        engine = loop.create_task(self.session.run())
        writer = loop.create_task(self._write())
        close = None
        try:
            if await self.flow.read_until_stalled(self._read()):
                close = (NOT_READING, NOT_READING_REASON)
        finally:
            await asyncio.shield(self._end(engine, writer, close))

    async def _end(self, engine: asyncio.Task, writer: asyncio.Task, close: tuple[int, str] | None) -> None:
        await finish_session(self.session, engine, writer, stalled=close is not None)
        await self.transport.close(*(close or ()))

    async def _read(self) -> None:
        while (frame := await self.transport.receive()) is not None:
            if not await self.flow.admit():
                if (notice := self.flow.rate_notice()) is not None:
                    await self.send_error(ProtocolError(notice, RATE_LIMITED))
                continue
            if isinstance(frame, str):
                await self.on_text(frame)
            else:
                await self.send_error(ProtocolError("binary frames are not part of this protocol; send JSON "
                                                    "events as text frames", UNSUPPORTED))
            await self.flow.room()  # backpressure: read on once the session has room

    def _check_buffer(self, size: int, fmt: str) -> None:
        """With turn_detection null only a commit ends the buffer, and the engine keeps a bounded timeline."""
        manual = self.realtime.audio.input.turn_detection is None
        limit_ms = self.limits.uncommitted_audio_s * 1000
        if manual and self.uncommitted_ms + duration_ms(size, fmt) > limit_ms:
            raise ProtocolError(f"the input audio buffer holds {self.uncommitted_ms / 1000:.1f} s, and may hold "
                                f"{self.limits.uncommitted_audio_s:g} s: commit or clear it first", BUFFER_FULL,
                                param="audio")


def _within_limits(limits: Any, instructions: str | None, tools: list[Any] | None, param: str) -> None:
    try:
        check_instructions(instructions, limits)
    except LimitExceeded as error:
        raise ProtocolError(error.message, error.code, param=f"{param}.instructions") from None
    try:
        check_tools(tools, limits)
    except LimitExceeded as error:
        raise ProtocolError(error.message, error.code, param=f"{param}.tools") from None


def _check_item_size(item: Item, limits: Any) -> None:
    """Text, call arguments and outputs count against ``text_chars``; images are bounded by bytes and pixels."""
    texts = [("item.content", item.text()), ("item.arguments", item.arguments), ("item.output", item.output)]
    for param, text in texts:
        try:
            check_text(text, limits, param)
        except LimitExceeded as error:
            raise ProtocolError(error.message, error.code, param=param) from None


def _check_item(item: Item) -> None:
    if item.type == "message" and (item.role is None or item.content is None):
        raise ProtocolError("a message item needs role and content", INVALID_VALUE, param="item.content")
    if item.type == "function_call" and not (item.call_id and item.name):
        raise ProtocolError("a function_call item needs call_id and name", INVALID_VALUE, param="item.call_id")
    if item.type == "function_call_output" and (not item.call_id or item.output is None):
        raise ProtocolError("a function_call_output item needs call_id and output", INVALID_VALUE,
                            param="item.call_id")


def _image_bytes(image_url: str | None) -> bytes:
    if not image_url or not image_url.startswith("data:"):
        raise ProtocolError("input_image needs a data URI (data:image/png;base64,...); URLs are not fetched",
                            INVALID_VALUE, param="item.content.image_url")
    return decode_base64(image_url.partition(",")[2], what="image_url")
