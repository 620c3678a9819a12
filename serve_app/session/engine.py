"""The session actor: one task owns a conversation's state and consumes its inbox.

Client commands, VAD frames, model results and response milestones all arrive through one
queue, so no two coroutines race on the state. States: idle -> listening -> transcribing ->
thinking -> speaking, and a barge-in goes back to listening.

The work is done by stages, each owning its state and given its collaborators here:
``InputAudio`` (the microphone), a ``TurnStrategy`` (when a turn ends), ``Transcriber``,
``Listener`` (a spoken turn up to the user's words), ``Responder`` (the answer), ``Images`` and
``Conversation`` (the context and the store). They report through the ``SessionChannel``. This
module routes each message to its stage and keeps the conversation's start, resume and stop.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

from pydantic import ValidationError

from serve_app.clients.models import ModelServices, ServiceError
from serve_app.clients.vad_ticker import VadFrames, VadTicker
from serve_app.metrics import TURN_METRICS
from serve_app.session.audio_input import InputAudio
from serve_app.session.audio_pace import AudioPace
from serve_app.session.channel import SessionChannel
from serve_app.session.config import SessionSettings
from serve_app.session.context import ConversationContext
from serve_app.session.conversation import Conversation, message_wire
from serve_app.session.events import (
    AddMessage,
    AudioIn,
    ClearAudio,
    Command,
    CommitAudio,
    Configure,
    CreateResponse,
    DeleteMessage,
    Disconnected,
    ImageIn,
    Interrupt,
    Ping,
    Pong,
    ResumeSession,
    RetryTurn,
    SessionResumed,
    SessionStarted,
    SessionTakenOver,
    StartConversation,
    State,
    StopConversation,
    TakenOver,
    ToolResult,
    TruncateReply,
    UserText,
)
from serve_app.session.images import Images
from serve_app.session.inbox import Described, FirstAudio, ResponseFinished, Transcribed, Verdict
from serve_app.session.limits import LimitExceeded, check_instructions, check_text, check_tools, check_value
from serve_app.session.listening import Listener
from serve_app.session.options import SessionOptions
from serve_app.session.outbox import Outbox
from serve_app.session.policy import TurnPolicy
from serve_app.session.responder import Responder
from serve_app.session.smart_turn_runner import SmartTurnRunner
from serve_app.session.tools import BuiltinTools
from serve_app.session.transcriber import Transcriber
from serve_app.session.transcription_load import TranscriptionLoad
from serve_app.session.turn_strategy import TurnStrategy, turn_strategy
from serve_app.store import SessionStore

logger = logging.getLogger(__name__)

RESUME_MESSAGES = 10
TAKE_OVER_TIMEOUT_S = 10.0


class Session:
    def __init__(self, services: ModelServices, store: SessionStore, options: SessionOptions, *,
                 vad_ticker: VadTicker | None, smart_turn: SmartTurnRunner | None,
                 stt_load: TranscriptionLoad, registry: dict[str, Session] | None = None,
                 api_key: str | None = None) -> None:
        self.options, self.smart_turn = options, smart_turn
        self.api_key = api_key  # the key this connection presented, when keys are configured: it owns what it makes
        self.registry = registry if registry is not None else {}  # live sessions by id, for take-over
        self.closed = asyncio.Event()
        self.channel = SessionChannel(options.limits)
        self.conversation = Conversation(store, ConversationContext(options.context_turns, options.context_max_chars,
                                                                    max_messages=options.limits.context_messages))
        detection = options.turn_detection
        self.audio = InputAudio(detection.max_utterance_s + 10, detection.prefix_padding_ms, vad_ticker,
                                self.channel.submit, vad_pending_s=options.limits.vad_pending_s)
        self.images = Images(self.channel, self.conversation, services, options.max_image_bytes, options.limits)
        self.transcriber = transcriber = Transcriber(self.channel, services, stt_load, self.audio, options)
        images = self.images
        # closures over the stages, not over self: a session must not reference itself, or its
        # buffers outlive it until the cyclic GC runs (bench/soak.py: +100 MB/min on the ingress)
        self.responder = Responder(self.channel, self.conversation, services,
                                   BuiltinTools(weather_url=options.weather_url), options,
                                   inputs_pending=lambda: transcriber.busy or images.describing > 0)
        self.listener = Listener(self.channel, self.audio, self._turns(TurnPolicy()), self.transcriber,
                                 self.responder, self.conversation, speculative_turns=options.speculative_turns,
                                 pace=AudioPace(options.limits.audio_burst_s))
        self.channel.watch_state(self.conversation.record_state)
        self.channel.watch_state(lambda state: self.listener.turns.on_state(state))

    # ---- what adapters use -------------------------------------------------------------------

    @property
    def session_id(self) -> str | None:
        return self.conversation.session_id

    @property
    def config(self) -> SessionSettings:
        return self.conversation.config

    @property
    def outbox(self) -> Outbox:
        return self.channel.outbox

    @property
    def state(self) -> State:
        return self.channel.state

    def submit(self, command: Command) -> None:
        self.channel.submit(command)

    def error(self, message: str, phase: str, code: str, ref: str | None = None) -> None:
        self.channel.error(message, phase, code, ref)

    def _turns(self, policy: TurnPolicy, vad_degraded: bool = False) -> TurnStrategy:
        return turn_strategy(policy, self.options.turn_detection, self.options.barge_in, self.channel,
                             self.smart_turn, self.audio, vad_degraded=vad_degraded)

    # ---- the actor -------------------------------------------------------------------------

    async def run(self) -> None:
        TURN_METRICS.sessions.inc()
        try:
            while True:
                message = await self.channel.inbox.get()
                if isinstance(message, Disconnected | TakenOver):
                    await self._on_disconnect()
                    if isinstance(message, TakenOver):
                        self.channel.emit(SessionTakenOver())
                    return
                try:
                    await self._handle(message)
                except ServiceError as error:
                    self.error(error.message, error.phase, error.code)
                except LimitExceeded as error:
                    self.error(error.message, "session", error.code)
                except Exception:
                    logger.exception("session %s: failed on %s", self.session_id, type(message).__name__)
                    self.error("internal error while handling a message; the session continues", "session",
                               "internal_error")
        finally:
            TURN_METRICS.sessions.dec()
            if self.session_id and self.registry.get(self.session_id) is self:
                del self.registry[self.session_id]
            self.closed.set()
            self.channel.close()

    async def _handle(self, message: Any) -> None:
        listener, responder = self.listener, self.responder
        if isinstance(message, VadFrames):
            await listener.on_frames(message)
        elif isinstance(message, Verdict):
            await listener.on_verdict(message)
        elif isinstance(message, Transcribed):
            await listener.on_transcribed(message)
        elif isinstance(message, FirstAudio):
            await responder.on_first_audio(message)
        elif isinstance(message, ResponseFinished):
            if await responder.on_finished(message.response):
                await listener.after_response()
                await responder.start_queued()
        elif isinstance(message, Described):
            try:
                await self.images.on_described(message)
            finally:
                await responder.start_queued()
        elif isinstance(message, Ping):
            self.channel.emit(Pong(message.t))
        elif isinstance(message, StartConversation):
            await self._start(message)
        elif isinstance(message, ResumeSession):
            await self._resume(message.session_id, message.resume_token)
        elif self.session_id is None:
            self.error("the conversation has not started", "session", "not_started")
        elif isinstance(message, AudioIn):
            await listener.on_audio(message, self.config.input_sample_rate)
        elif isinstance(message, UserText):
            await self._on_user_text(message.text)
        elif isinstance(message, Interrupt):
            await responder.barge_in("manual")
        elif isinstance(message, StopConversation):
            await self._stop()
        elif isinstance(message, ImageIn):
            self.images.on_image(message)
        elif isinstance(message, ToolResult):
            check_value(message.result, self.options.limits, "a tool result")
            if not responder.deliver_tool_result(message.call_id, message.result):
                self.error(f"no tool call {message.call_id!r} is waiting for a result", "tools", "unknown_call_id")
        elif isinstance(message, RetryTurn):
            await self._retry()
        elif isinstance(message, Configure):
            await self._configure(message)
        elif isinstance(message, CommitAudio):
            await listener.commit(message.message_id)
        elif isinstance(message, ClearAudio):
            await listener.clear()
        elif isinstance(message, CreateResponse):
            await responder.request(message)
        elif isinstance(message, AddMessage):
            await self.conversation.add_client_message(message.message, message.message_id, message.after)
        elif isinstance(message, DeleteMessage):
            self.conversation.context.remove(message.message_id)  # idempotent: an empty transcript never became one
        elif isinstance(message, TruncateReply):
            await responder.truncate(message)

    # ---- commands that span the stages ----------------------------------------------------

    async def _on_user_text(self, text: str) -> None:
        text = text.strip()
        if not text:
            self.error("the user's message is empty", "session", "empty_message")
            return
        check_text(text, self.options.limits, "a user message")
        await self.listener.drop_speculation("user_text")
        if self.responder.busy:
            await self.responder.barge_in("manual")
        self.responder.new_turn(transcript_at=time.time())
        await self.responder.user_turn(text)

    async def _retry(self) -> None:
        pending = self.responder.last_input
        if pending is None or self.responder.busy:
            self.error("there is no failed turn to retry", "session", "nothing_to_retry")
            return
        if pending.kind == "stt" and pending.audio is not None:
            await self.listener.retry(pending.audio)
        else:
            await self.responder.respond()

    async def _configure(self, command: Configure) -> None:
        if command.config:
            config = self._parse_config({**self.config.model_dump(), **command.config})
            if config is None:
                return
            if config.input_sample_rate != self.config.input_sample_rate:
                self.audio.set_rate(config.input_sample_rate)
            await self.conversation.configure(config)
        if command.replies is not None:
            self.responder.replies = command.replies
        if (command.config or command.replies is not None) and self.session_id and not self.responder.busy:
            self.responder.read_ahead()  # new instructions or tools: a new prompt prefix
        if command.turns is not None:
            self.listener.use(self._turns(command.turns, vad_degraded=self.listener.turns.vad_degraded))

    def _parse_config(self, raw: dict[str, Any]) -> SessionSettings | None:
        try:
            return SessionSettings.model_validate(raw)
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            self.error(f"invalid config: {where}: {first['msg']}", "session", "invalid_config")
            return None

    # ---- start, resume, stop ----------------------------------------------------------------

    async def _start(self, command: StartConversation) -> None:
        config = command.settings  # the adapter parsed its wire's form of it
        check_instructions(config.instructions, self.options.limits)
        check_tools(config.tools, self.options.limits)
        session_id = command.session_id or uuid.uuid4().hex
        stored = await self.conversation.exists(session_id)
        # someone else's session must not lose its socket, its response or its instructions: claim first
        token = await self._claim(session_id, command.resume_token) if stored else None
        if stored and token is None:
            return
        if self.responder.busy:
            await self.responder.barge_in("manual")
        leaving = self.session_id
        if stored:
            await self._take_over(session_id, leaving)
            await self.conversation.reopen(session_id, config)
        else:  # created before it is registered, so a lost race for the id takes nobody's socket
            token = await self.conversation.create(session_id, config, self.api_key)
            if token is None:  # another connection created this id a moment ago
                self._refuse(session_id)
                return
            await self._take_over(session_id, leaving)
        self._open_audio()
        self.channel.emit(SessionStarted(session_id, config, token))
        self.channel.state = State.IDLE
        await self.channel.set_state(State.LISTENING)
        self.responder.read_ahead()

    async def _resume(self, session_id: str, resume_token: str | None) -> None:
        if not await self.conversation.exists(session_id):
            self.error(f"no session {session_id!r} to resume", "session", "session_not_found")
            return
        token = await self._claim(session_id, resume_token)
        if token is None:
            return
        if self.responder.busy:
            await self.responder.barge_in("manual")
        await self._take_over(session_id, self.session_id)
        stored = await self.conversation.resume(session_id)
        # a turn in flight when the socket dropped cannot continue: resume ready to listen
        state = State.IDLE if stored.state == State.IDLE.value else State.LISTENING
        self.channel.state = state
        await self.conversation.record_state(state)
        self._open_audio()
        last = await self.conversation.last_messages(RESUME_MESSAGES)
        self.channel.emit(SessionResumed(session_id, state, [message_wire(m) for m in last], token))
        self.responder.read_ahead()

    async def _claim(self, session_id: str, resume_token: str | None) -> str | None:
        """A new resume token if this connection may take up stored ``session_id``; else an error, nothing more."""
        token = await self.conversation.claim(session_id, resume_token, self.api_key)
        if token is None:
            self._refuse(session_id)
        return token

    def _refuse(self, session_id: str) -> None:
        self.error(f"session {session_id!r} belongs to another client: taking it up needs its current resumeToken "
                   "(and the API key that created it)", "session", "session_forbidden")

    async def _take_over(self, session_id: str, leaving: str | None) -> None:
        """Register this connection as ``session_id``'s, leaving the session it had. The session's previous
        connection ends (storing what it cut) and its socket is closed; one that already dropped may still
        be storing its last words, so it finishes first."""
        if leaving and leaving != session_id and self.registry.get(leaving) is self:
            del self.registry[leaving]
        previous = self.registry.get(session_id)
        if previous is not None and previous is not self:
            previous.submit(TakenOver())
            try:
                await asyncio.wait_for(previous.closed.wait(),
                                       TAKE_OVER_TIMEOUT_S + self.options.limits.disconnect_drain_s)
            except TimeoutError:
                logger.warning("session %s: previous socket did not close in time", session_id)
        self.registry[session_id] = self

    def _open_audio(self) -> None:
        self.audio.open(self.config.input_sample_rate)
        self.listener.turns.reset()

    async def _stop(self) -> None:
        await self.listener.drop_speculation("stopped")
        if self.responder.busy:
            await self.responder.barge_in("manual")
        await self.channel.set_state(State.IDLE)

    async def _on_disconnect(self) -> None:
        self.responder.closing = True  # what is still said is stored, not answered
        await self.listener.drop_speculation("disconnected")
        if self.responder.busy:
            await self.responder.cancel(reason=None)
        self.audio.close()
        await self._store_inputs_in_flight()
        if self.session_id:
            await self.conversation.cancel_pending_tool_calls()
        if self.session_id and self.state not in (State.IDLE, State.LISTENING):
            await self.conversation.record_state(State.LISTENING)

    async def _store_inputs_in_flight(self) -> None:
        """The user's last words and pictures are theirs: a final transcript or an image description
        still on its way is waited for (up to ``disconnect_drain_s``) and stored, not cancelled."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.options.limits.disconnect_drain_s
        while self.transcriber.busy or self.images.describing:
            left = deadline - loop.time()
            if left <= 0:
                logger.warning("session %s: inputs still in flight %.0f s after the disconnect; not stored",
                               self.session_id, self.options.limits.disconnect_drain_s)
                return
            try:
                message = await asyncio.wait_for(self.channel.inbox.get(), left)
            except TimeoutError:
                continue
            if not isinstance(message, Transcribed | Described):
                continue  # the client is gone: its commands and the live turn's signals are moot
            try:
                await self._handle(message)
            except Exception:
                logger.exception("session %s: storing %s after the disconnect failed", self.session_id,
                                 type(message).__name__)
