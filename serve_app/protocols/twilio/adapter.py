"""The Twilio Media Streams adapter for one call: Twilio's messages <-> engine commands and events.

A phone call is a normal voice session with server turn detection: the caller's 8 kHz µ-law is
decoded here and resampled to 16 kHz by the engine; the answer is synthesised at 8 kHz, µ-law
encoded here and sent in 20 ms ``media`` messages, with a ``mark`` after each spoken piece.
Twilio echoes a mark once that piece has played, so ``Playback`` knows what the caller heard: a
barge-in sends ``clear`` and cuts the reply to the last echoed mark (``TruncateReply``), which is
what the stored reply and the LLM context keep. Twilio's wire has no error message (anything but
``media``, ``mark`` and ``clear`` ends the call), so errors are logged, never sent.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import math
from typing import Any

from pydantic import ValidationError
from starlette.websockets import WebSocket, WebSocketDisconnect

from serve_app.protocols.ending import end_session
from serve_app.protocols.twilio import mulaw
from serve_app.protocols.twilio import wire as tw
from serve_app.protocols.twilio.keypad import Keypad
from serve_app.protocols.twilio.options import TwilioOptions
from serve_app.protocols.twilio.playback import Playback, SentMark
from serve_app.session import events as ev
from serve_app.session.config import SessionSettings
from serve_app.session.engine import Session

logger = logging.getLogger(__name__)

MAX_MESSAGE_CHARS = 64 * 1024  # Twilio's messages are a few hundred bytes; a 20 ms media frame ~300
SESSION_ID_PARAMETER, INSTRUCTIONS_PARAMETER, VOICE_PARAMETER = "sessionId", "instructions", "voice"


def call_settings(start: tw.StartInfo, options: TwilioOptions) -> SessionSettings:
    """A call's session: 8 kHz both ways; instructions and voice from the ``<Stream>``'s parameters."""
    parameters = start.custom_parameters
    return SessionSettings(
        input_sample_rate=tw.SAMPLE_RATE, output_sample_rate=tw.SAMPLE_RATE,
        voice=(parameters.get(VOICE_PARAMETER) or options.voice or None),
        instructions=(parameters.get(INSTRUCTIONS_PARAMETER) or options.instructions or None),
        transport={"twilio": {"streamSid": start.stream_sid, "callSid": start.call_sid,
                              "accountSid": start.account_sid}})


class TwilioAdapter:
    def __init__(self, websocket: WebSocket, session: Session, options: TwilioOptions) -> None:
        self.websocket, self.session, self.options = websocket, session, options
        self.stream_sid: str | None = None
        self.playback = Playback()
        self.keypad = Keypad(self._keys_pressed, options.keypad_pause_ms / 1000)
        self.reply: str | None = None  # the reply whose audio is being sent
        self._pieces = 0  # marks sent for that reply
        self._unsent = b""  # µ-law of that reply short of a whole 20 ms frame
        self._send_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task] = set()
        self._gone = False
        self._early_media = False

    # ---- sending -------------------------------------------------------------------------

    async def _send(self, *messages: tw._Out) -> None:
        async with self._send_lock:
            for message in messages:
                if self._gone:
                    return
                try:
                    await self.websocket.send_text(json.dumps(message.wire()))
                except Exception:  # noqa: BLE001 - the call is gone; the reader sees the disconnect
                    self._gone = True

    def _media(self, payload: bytes) -> tw.MediaOut:
        return tw.MediaOut(stream_sid=self.stream_sid, media=tw.OutPayload(payload=base64.b64encode(payload).decode()))

    async def _audio(self, pcm16: bytes) -> None:
        data = self._unsent + mulaw.encode(pcm16)
        whole = len(data) // tw.FRAME_BYTES * tw.FRAME_BYTES
        self._unsent = data[whole:]
        frames = [self._media(data[i : i + tw.FRAME_BYTES]) for i in range(0, whole, tw.FRAME_BYTES)]
        if frames:
            if self.reply is not None:
                self.playback.audio_sent(self.reply)
            await self._send(*frames)

    async def _mark(self, end_ms: float) -> None:
        """The piece before it is complete: its last short frame goes out, then the mark."""
        if self.reply is None:
            return
        if self._unsent:
            self.playback.audio_sent(self.reply)
            await self._send(self._media(self._unsent))
            self._unsent = b""
        self._pieces += 1
        mark = SentMark(f"{self.reply}.{self._pieces}", self.reply, end_ms)
        self.playback.mark_sent(mark)
        await self._send(tw.MarkOut(stream_sid=self.stream_sid, mark=tw.MarkName(name=mark.name)))

    async def _clear(self) -> None:
        """Stop what the caller hears and cut each reply that was playing to the part heard; the reply
        being answered is cut too, even when the caller had heard all of it that was sent."""
        playing = self.playback.playing
        cut = self.playback.clear()
        if self.reply is not None and self.reply not in cut:
            cut.append(self.reply)
        self._unsent = b""
        if playing:
            await self._send(tw.Clear(stream_sid=self.stream_sid))
        self._truncate(cut)

    def _truncate(self, replies: list[str]) -> None:
        for message_id in replies:
            self.session.submit(ev.TruncateReply(message_id, self.playback.heard_ms(message_id)))

    # ---- inbound -------------------------------------------------------------------------

    def _reject(self, message: str, code: str, phase: str = "protocol") -> None:
        self.session.error(message, phase, code)  # counted, and logged when it comes out of the outbox

    async def on_text(self, text: str) -> bool:
        """Handle one message from Twilio; False once the stream has stopped."""
        if len(text) > MAX_MESSAGE_CHARS:
            self._reject(f"message of {len(text)} characters is over the {MAX_MESSAGE_CHARS} limit", "frame_too_large")
            return True
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as error:
            self._reject(f"malformed JSON: {error.msg} at position {error.pos}", "invalid_json")
            return True
        if not isinstance(raw, dict) or raw.get("event") not in tw.EVENTS:
            logger.debug("ignoring a Twilio message of event %r", raw.get("event") if isinstance(raw, dict) else raw)
            return True  # Twilio may add events; an old server ignores them as the docs ask
        try:
            message = tw.MESSAGE.validate_python(raw)
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(p) for p in first["loc"][1:]) or "message"
            self._reject(f"invalid {raw['event']}: {where}: {first['msg']}", "invalid_message")
            return True
        return await self._dispatch(message)

    async def _dispatch(self, message: Any) -> bool:
        match message:
            case tw.Media():
                self._caller_audio(message.media)
            case tw.Mark():
                self.playback.echoed(message.mark.name)
            case tw.Start():
                self._start(message.start)
            case tw.Dtmf():
                self.keypad.press(message.dtmf.digit)
            case tw.Stop():
                return False
            case tw.Connected():
                pass
        return True

    def _start(self, start: tw.StartInfo) -> None:
        if self.stream_sid is not None:
            self._reject("a second start on one stream", "already_started", "session")
            return
        fmt = start.media_format
        if (fmt.encoding, fmt.sample_rate, fmt.channels) != (tw.MULAW, tw.SAMPLE_RATE, 1):
            self._reject(f"media format {fmt.encoding} {fmt.sample_rate} Hz x{fmt.channels} is not "
                         f"{tw.MULAW} {tw.SAMPLE_RATE} Hz mono", "unsupported_format", "audio")
        self.stream_sid = start.stream_sid
        session_id = start.custom_parameters.get(SESSION_ID_PARAMETER) or None
        self.session.submit(ev.StartConversation(session_id, call_settings(start, self.options)))

    def _caller_audio(self, media: tw.MediaPayload) -> None:
        if media.track not in ("inbound", "inbound_track"):
            return  # a <Start><Stream track="both_tracks"> also sends what we said
        if self.stream_sid is None:
            if not self._early_media:
                self._reject("media before start: dropped until the stream starts", "not_started", "session")
            self._early_media = True
            return
        try:
            payload = base64.b64decode(media.payload, validate=True)
        except (binascii.Error, ValueError) as error:
            self._reject(f"media payload is not valid base64: {error}", "bad_base64", "audio")
            return
        if len(payload) > self.session.options.max_audio_frame_bytes:
            self._reject(f"media frame of {len(payload)} bytes is over the limit", "frame_too_large", "audio")
            return
        self.session.submit(ev.AudioIn(mulaw.decode(payload)))

    def _keys_pressed(self, text: str) -> None:
        """Keys pressed are a turn in words; they stop what is playing, as speech would."""
        if self.playback.playing:
            task = asyncio.get_running_loop().create_task(self._clear())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self.session.submit(ev.UserText(text))

    # ---- outbound ------------------------------------------------------------------------

    async def on_event(self, event: ev.Event) -> None:
        match event:
            case ev.ResponseStarted():
                self.reply, self._pieces, self._unsent = event.message_id, 0, b""
            case ev.AudioOut():
                await self._audio(event.pcm16)
            case ev.SentenceSent():
                await self._mark(event.end_ms)
            case ev.ResponseEnded():
                if self.reply is not None and (self._unsent or self.playback.unmarked(self.reply)):
                    await self._mark(math.inf)  # audio after its last piece (TTS failed mid-way): mark it all
                self.reply = None
            case ev.StopSpeaking():
                await self._clear()
                self.reply = None  # what the cancelled reply still produces is dropped by the engine
            case ev.SpeechStarted() if self.playback.playing:
                await self._clear()  # the reply had ended here, but the caller still hears its tail
            case ev.ErrorEvent():
                logger.warning("twilio stream %s: %s error %s: %s", self.stream_sid, event.phase, event.code,
                               event.message)
            case ev.SessionStarted():
                logger.info("twilio stream %s is session %s", self.stream_sid, event.session_id)

    async def _write(self) -> None:
        while (item := await self.session.outbox.get()) is not None:
            try:
                await self.on_event(item.event)
            except Exception:
                logger.exception("could not send %s to Twilio", type(item.event).__name__)

    # ---- the call's life -----------------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        engine = loop.create_task(self.session.run())
        writer = loop.create_task(self._write())
        try:
            while True:
                message = await self.websocket.receive()
                if message["type"] == "websocket.disconnect":
                    break
                if message.get("text") is not None and not await self.on_text(message["text"]):
                    break
                if message.get("bytes") is not None:
                    self._reject("binary frames are not part of Twilio Media Streams", "invalid_message")
        except WebSocketDisconnect:
            pass
        finally:
            self.keypad.close()
            for task in self._tasks:
                task.cancel()
            # hung up mid-reply: the stored reply is what the caller heard, as on a barge-in
            self._truncate(self.playback.clear())
            await asyncio.shield(end_session(self.session, self.websocket, engine, writer))
