"""The session actor: one task owns a conversation's state and consumes its inbox.

Client commands, VAD frames, model results and response milestones all arrive through one
queue, so no two coroutines race on the state. States: idle -> listening -> transcribing ->
thinking -> speaking, and a barge-in goes back to listening. Everything said or answered is
written to the store before it is announced.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import ValidationError

from deployments.llm import ChatMessage, ToolCall
from serve_app.clients.models import ModelServices, ServiceError
from serve_app.clients.vad_ticker import VadFrames, VadStream, VadTicker
from serve_app.metrics import TURN_METRICS
from serve_app.session.audio_input import SAMPLE_RATE, AudioFormatError, AudioTimeline, InputResampler
from serve_app.session.config import SessionConfig
from serve_app.session.context import ConversationContext
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
    ErrorEvent,
    Event,
    ImageIn,
    Interrupt,
    Interrupted,
    Outgoing,
    Ping,
    Pong,
    ReplyTruncated,
    ResponseEnded,
    ResponseStarted,
    ResumeSession,
    RetryTurn,
    SessionResumed,
    SessionStarted,
    SpeechStarted,
    SpeechStopped,
    StartConversation,
    State,
    StateChanged,
    StopConversation,
    StopSpeaking,
    ToolResult,
    TranscriptEmpty,
    TranscriptFinal,
    TranscriptPartial,
    TruncateReply,
    UserAudioCommitted,
    UserText,
    VisionResult,
)
from serve_app.session.options import SessionOptions
from serve_app.session.outbox import Outbox
from serve_app.session.policy import ReplyPolicy, ResponseOverrides, TurnPolicy
from serve_app.session.response import Response, ResponseSettings
from serve_app.session.smart_turn_runner import SmartTurnRunner
from serve_app.session.tools import BuiltinTools
from serve_app.session.transcription_load import TranscriptionLoad
from serve_app.session.turn_detection import (
    Onset,
    OnsetLost,
    PauseCheck,
    SpeechConfirmed,
    TurnDetector,
    TurnEnded,
)
from serve_app.store import SessionStore, StoredMessage

logger = logging.getLogger(__name__)

RESUME_MESSAGES = 10
TAKE_OVER_TIMEOUT_S = 10.0
KEPT_REPLIES = 16  # recent replies whose audio timing is kept, so a client can truncate them


def new_message_id() -> str:
    return f"msg_{uuid.uuid4().hex[:20]}"


# ---- inbox messages from the session's own helpers ------------------------------------------


@dataclass
class _Verdict:
    pause_id: int
    probability: float | None


@dataclass
class _Transcribed:
    utterance: int
    result: Any  # Transcription | ServiceError
    partial: bool
    message_id: str = ""


@dataclass
class _Described:
    image: bytes
    prompt: str | None
    result: Any  # str | ServiceError
    message_id: str | None = None


@dataclass
class _FirstAudio:
    generation: int
    done: asyncio.Future


@dataclass
class _ResponseFinished:
    response: Response


@dataclass
class _Pending:
    """The input of the last turn, kept so a failed turn can be retried."""

    kind: str  # stt | llm
    audio: np.ndarray | None = None


class Session:
    def __init__(self, services: ModelServices, store: SessionStore, options: SessionOptions, *,
                 vad_ticker: VadTicker | None, smart_turn: SmartTurnRunner | None,
                 registry: dict[str, Session] | None = None, stt_load: TranscriptionLoad | None = None) -> None:
        self.services, self.store, self.options = services, store, options
        self.stt_load = stt_load if stt_load is not None else TranscriptionLoad()  # shared by the host's sessions
        self.registry = registry if registry is not None else {}
        self.closed = asyncio.Event()
        self.vad_ticker, self.smart_turn = vad_ticker, smart_turn
        self.tools = BuiltinTools(weather_url=options.weather_url)
        self.inbox: asyncio.Queue = asyncio.Queue()
        self.outbox = Outbox()
        self.session_id: str | None = None
        self.config = SessionConfig()
        self.state = State.IDLE
        self.context = ConversationContext(options.context_turns, options.context_max_chars)
        self.generation = 0
        self.response: Response | None = None
        self.turn_id: int | None = None
        self._turn_times: dict[str, float] = {}
        self._resampler: InputResampler | None = None
        self._timeline = AudioTimeline(options.turn_detection.max_utterance_s + 10)
        self._vad_stream: VadStream | None = None
        self._vad_degraded_reported = False
        self.turns, self.replies = TurnPolicy(), ReplyPolicy()
        self.turn_options = options.turn_detection
        self._detector = TurnDetector(options.turn_detection, smart_turn_available=smart_turn is not None)
        self._utterance = 0
        self._utterance_id = ""
        self._buffer_start = 0  # timeline position where the uncommitted audio begins
        self._transcribing: set[str] = set()  # committed turns whose transcript is not back yet
        self._describing = 0  # images being described
        self._queued: CreateResponse | None = None  # a requested response waiting for those inputs
        self._respond_after = False  # a turn ended during a response that was not interrupted
        self._replies: OrderedDict[str, Response] = OrderedDict()  # recent replies, for TruncateReply
        self._partial_in_flight = False
        self._last_partial_at = 0
        self._pending: _Pending | None = None
        self._helpers: set[asyncio.Task] = set()

    # ---- plumbing ---------------------------------------------------------------------------

    def submit(self, command: Command) -> None:
        self.inbox.put_nowait(command)

    def emit(self, event: Event, generation: int | None = None) -> None:
        if generation is not None and generation != self.generation:
            return  # output of a cancelled response
        self.outbox.put(Outgoing(event, generation))

    def error(self, message: str, phase: str, code: str, ref: str | None = None) -> None:
        TURN_METRICS.errors.labels(phase=phase, code=code).inc()
        self.emit(ErrorEvent(message, phase, code, ref=ref))

    def _spawn(self, coroutine) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._helpers.add(task)
        task.add_done_callback(self._helpers.discard)

    async def _set_state(self, state: State) -> None:
        if state is self.state:
            return
        self.state = state
        if self.session_id:
            await self.store.set_state(self.session_id, state.value)
        self.emit(StateChanged(state))
        barge = self.options.barge_in
        if state is State.SPEAKING:
            self._detector.set_sensitivity(barge.threshold, barge.min_speech_ms)
        else:
            td = self.turn_options
            self._detector.set_sensitivity(td.threshold, td.min_speech_ms)

    async def run(self) -> None:
        TURN_METRICS.sessions.inc()
        try:
            while True:
                message = await self.inbox.get()
                if isinstance(message, Disconnected):
                    await self._on_disconnect()
                    return
                try:
                    await self._handle(message)
                except ServiceError as error:
                    self.error(error.message, error.phase, error.code)
                except Exception:
                    logger.exception("session %s: failed on %s", self.session_id, type(message).__name__)
                    self.error("internal error while handling a message; the session continues", "session",
                               "internal_error")
        finally:
            TURN_METRICS.sessions.dec()
            if self.session_id and self.registry.get(self.session_id) is self:
                del self.registry[self.session_id]
            self.closed.set()
            for task in list(self._helpers):
                task.cancel()
            self.outbox.close()

    async def _handle(self, message: Any) -> None:
        if isinstance(message, VadFrames):
            await self._on_vad(message)
        elif isinstance(message, _Verdict):
            await self._apply_signals(self._detector.on_completion(message.pause_id, message.probability))
        elif isinstance(message, _Transcribed):
            await self._on_transcribed(message)
        elif isinstance(message, _FirstAudio):
            if message.generation == self.generation:
                self._turn_times.setdefault("first_audio_at", time.time())
                await self._set_state(State.SPEAKING)
            message.done.set_result(None)
        elif isinstance(message, _ResponseFinished):
            await self._on_response_finished(message.response)
        elif isinstance(message, _Described):
            await self._on_described(message)
        elif isinstance(message, Ping):
            self.emit(Pong(message.t))
        elif isinstance(message, StartConversation):
            await self._start(message)
        elif isinstance(message, ResumeSession):
            await self._resume(message.session_id)
        elif self.session_id is None:
            self.error("send start_conversation or resume_session first", "session", "not_started")
        elif isinstance(message, AudioIn):
            self._on_audio(message)
        elif isinstance(message, UserText):
            await self._on_user_text(message.text)
        elif isinstance(message, Interrupt):
            await self._barge_in("manual")
        elif isinstance(message, StopConversation):
            await self._stop()
        elif isinstance(message, ImageIn):
            self._on_image(message)
        elif isinstance(message, ToolResult):
            if self.response is None or not self.response.deliver_tool_result(message.call_id, message.result):
                self.error(f"no tool call {message.call_id!r} is waiting for a result", "tools", "unknown_call_id")
        elif isinstance(message, RetryTurn):
            await self._retry()
        elif isinstance(message, Configure):
            await self._configure(message)
        elif isinstance(message, CommitAudio):
            await self._commit_audio(message.message_id)
        elif isinstance(message, ClearAudio):
            self._buffer_start = self._timeline.end
            self._detector.reset()
        elif isinstance(message, CreateResponse):
            await self._on_create_response(message)
        elif isinstance(message, AddMessage):
            await self._add_message(message)
        elif isinstance(message, DeleteMessage):
            self.context.remove(message.message_id)  # idempotent: an empty transcript never became a message
        elif isinstance(message, TruncateReply):
            await self._truncate(message)

    # ---- starting, resuming, stopping ---------------------------------------------------

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
        self.emit(SessionResumed(session_id, state, [_message_wire(m) for m in last]))

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
        self.context.messages = [_as_chat(m) for m in await self.store.messages(session_id)]

    def _open_audio(self) -> None:
        self._resampler = InputResampler(self.config.input_sample_rate)
        if self._vad_stream is None and self.vad_ticker is not None:
            self._vad_stream = self.vad_ticker.open_stream(self.submit)
        self._detector.reset()

    async def _stop(self) -> None:
        if self.response is not None:
            await self._barge_in("manual")
        await self._set_state(State.IDLE)

    async def _on_disconnect(self) -> None:
        if self.response is not None:
            await self._cancel_response(reason=None)
        if self._vad_stream is not None:
            self._vad_stream.close()
        if self.session_id and self.state not in (State.IDLE, State.LISTENING):
            await self.store.set_state(self.session_id, State.LISTENING.value)

    # ---- audio in, VAD, end of turn --------------------------------------------------------

    def _on_audio(self, message: AudioIn) -> None:
        if self.state is State.IDLE:
            return  # not listening: the microphone stream is dropped, as after stop_conversation
        try:
            samples = self._resampler.push(message.pcm16)
        except AudioFormatError as error:
            self.error(str(error), "audio", "bad_audio")
            return
        self._timeline.append(samples)
        if self._vad_stream is not None and not self.turns.manual:
            self._vad_stream.push(samples)

    async def _on_vad(self, frames: VadFrames) -> None:
        if frames.degraded and not self._vad_degraded_reported:
            self._vad_degraded_reported = True
            self.error(f"voice activity detection is unavailable ({frames.error}); using energy and fixed silence",
                       "vad", "service_unavailable")
            self._detector.smart_turn = False
        end = frames.end_sample - (len(frames.probabilities) - 1) * 512
        for probability in frames.probabilities:
            await self._apply_signals(self._detector.push(float(probability), end))
            end += 512
        self._maybe_partial(frames.end_sample)

    async def _apply_signals(self, signals: list) -> None:
        for signal in signals:
            if isinstance(signal, Onset):
                if self.state is State.SPEAKING and self.response is not None and self.turns.interrupt:
                    self._turn_times["barge_in_at"] = time.time()
                    self.response.pause_audio()
            elif isinstance(signal, OnsetLost):
                if self.response is not None:
                    self.response.resume_audio()  # noise or echo: a false barge-in resumes
            elif isinstance(signal, SpeechConfirmed):
                self._utterance += 1
                self._utterance_id = new_message_id()
                self._last_partial_at = signal.start_sample
                self.emit(SpeechStarted(signal.start_sample * 1000 // SAMPLE_RATE, self._utterance_id))
                if self.turns.interrupt and (self.response is not None
                                             or self.state in (State.TRANSCRIBING, State.THINKING)):
                    await self._barge_in("user_speech")
            elif isinstance(signal, PauseCheck):
                self._ask_end_of_turn(signal)
            elif isinstance(signal, TurnEnded):
                await self._end_turn(signal)

    def _ask_end_of_turn(self, check: PauseCheck) -> None:
        audio = self._timeline.slice(self._detector.speech_start, check.end_sample)

        async def ask() -> None:
            try:
                probability = await self.smart_turn.completion_probability(audio)
            except Exception:
                logger.exception("end-of-turn model failed")
                probability = None
            self.submit(_Verdict(check.pause_id, probability))

        self._spawn(ask())

    def _maybe_partial(self, position: int) -> None:
        wanted = self.options.partial_transcripts and self.turns.partial_transcripts
        if not (wanted and self._detector.in_speech) or self._partial_in_flight:
            return
        if not self.stt_load.partial_allowed():
            return
        if (position - self._last_partial_at) * 1000 < self.options.partial_interval_ms * SAMPLE_RATE:
            return
        self._last_partial_at = position
        self._partial_in_flight = True
        audio = self._timeline.slice(self._utterance_start(self._detector.speech_start), position)
        self._spawn(self._transcribe(self._utterance, audio, partial=True))

    def _utterance_start(self, speech_start: int) -> int:
        return max(self._buffer_start, speech_start - self.turn_options.prefix_padding_ms * SAMPLE_RATE // 1000)

    async def _end_turn(self, ended: TurnEnded) -> None:
        self.emit(SpeechStopped(ended.end_sample * 1000 // SAMPLE_RATE, self._utterance_id))
        start = self._utterance_start(ended.start_sample)
        self._buffer_start = ended.end_sample
        self._turn_times = {"speech_end_at": time.time()}
        await self._committed(self._utterance_id, start, ended.end_sample)

    async def _commit_audio(self, message_id: str | None) -> None:
        """The client ends the turn: everything since the last turn is the user's message."""
        if self._detector.in_speech:
            self.emit(SpeechStopped(self._timeline.end * 1000 // SAMPLE_RATE, self._utterance_id))
            message_id = message_id or self._utterance_id
        else:
            self._utterance += 1
        self._detector.reset()
        start, self._buffer_start = self._buffer_start, self._timeline.end
        if self._timeline.end <= start:
            self.error("there is no audio to commit", "audio", "empty_audio", ref=message_id)
            return
        self._turn_times = {"speech_end_at": time.time()}
        await self._committed(message_id or new_message_id(), start, self._timeline.end)

    async def _committed(self, message_id: str, start: int, end: int) -> None:
        audio = self._timeline.slice(start, end)
        self.emit(UserAudioCommitted(message_id, start * 1000 // SAMPLE_RATE, end * 1000 // SAMPLE_RATE))
        if self.response is None:
            await self._set_state(State.TRANSCRIBING)
        self._pending = _Pending("stt", audio)
        self._transcribing.add(message_id)
        self._spawn(self._transcribe(self._utterance, audio, partial=False, message_id=message_id))

    async def _transcribe(self, utterance: int, audio: np.ndarray, partial: bool, message_id: str = "") -> None:
        try:
            with self.stt_load.in_flight(partial):
                result: Any = await self.services.transcribe(audio)
        except ServiceError as error:
            result = error
        self.submit(_Transcribed(utterance, result, partial, message_id))

    async def _on_transcribed(self, message: _Transcribed) -> None:
        if message.partial:
            self._partial_in_flight = False
            if (message.utterance == self._utterance and self._detector.in_speech
                    and not isinstance(message.result, ServiceError) and message.result.text):
                self.emit(TranscriptPartial(message.result.text))
            return
        self._transcribing.discard(message.message_id)
        try:
            await self._on_final_transcript(message)
        finally:
            await self._start_queued()

    async def _on_final_transcript(self, message: _Transcribed) -> None:
        message_id = message.message_id
        if isinstance(message.result, ServiceError):
            error = message.result
            if message.utterance == self._utterance and self.state is State.TRANSCRIBING:
                self.error(f"{error.message}; send retry_turn to try this turn again", error.phase, error.code,
                           ref=message_id or None)
                await self._set_state(State.LISTENING)
            elif message_id:
                self.error(error.message, error.phase, error.code, ref=message_id)
            return
        text = message.result.text.strip()
        if not text and message_id:
            self.emit(TranscriptEmpty(message_id))
        if message.utterance != self._utterance or self.state is not State.TRANSCRIBING:
            if text:  # the user went on talking: what they said first is kept, answered with the rest
                await self.store.add_message(self.session_id, "user", text, turn_id=self.turn_id)
                self.context.add(ChatMessage(role="user", content=text), message_id)
                self.emit(TranscriptFinal(text, message_id))
                if self.response is not None and self.turns.auto_respond and not self.turns.interrupt:
                    self._respond_after = True  # answered once the current reply is over
            return
        if not text:  # noise, or a hallucination the STT service blanked
            self._pending = None
            await self._set_state(State.LISTENING)
            return
        self._turn_times["transcript_at"] = time.time()
        await self._user_turn(text, message_id, respond=self.turns.auto_respond)

    # ---- turns and responses ---------------------------------------------------------------

    async def _on_user_text(self, text: str) -> None:
        text = text.strip()
        if not text:
            self.error("user_message text is empty", "session", "empty_message")
            return
        if self.response is not None:
            await self._barge_in("manual")
        self._turn_times = {"transcript_at": time.time()}
        await self._user_turn(text)

    async def _user_turn(self, text: str, message_id: str = "", respond: bool = True) -> None:
        self.turn_id = await self.store.start_turn(self.session_id)
        await self.store.add_message(self.session_id, "user", text, turn_id=self.turn_id)
        self.context.add(ChatMessage(role="user", content=text), message_id)
        self.emit(TranscriptFinal(text, message_id))
        self._pending = _Pending("llm")
        if respond or self._queued is not None:
            request, self._queued = self._queued, None
            await self._respond(request)
        else:
            await self._set_state(State.LISTENING)

    async def _respond(self, request: CreateResponse | None = None) -> None:
        self.generation += 1
        await self._set_state(State.THINKING)
        once = (request.overrides if request else None) or ResponseOverrides()
        instructions = once.instructions or self.config.instructions or self.options.instructions
        settings = ResponseSettings(
            instructions=instructions,
            output_rate=self.config.output_sample_rate,
            voice=once.voice or self.config.voice,
            max_tokens=once.max_tokens or self.replies.max_tokens or self.options.max_response_tokens,
            temperature=self.options.temperature,
            max_tool_rounds=self.options.max_tool_rounds,
            playback_lead_ms=self.options.playback_lead_ms,
            client_tool_timeout_s=self.options.client_tool_timeout_s,
            client_tools=once.tools if once.tools is not None else self.config.tools,
            speak=once.speak if once.speak is not None else self.replies.speak,
            builtin_tools=self.replies.builtin_tools,
            end_on_client_tool=self.replies.end_on_client_tool,
            tool_choice=once.tool_choice or self.replies.tool_choice,
        )
        history = self.context.for_llm(settings.instructions)
        tag, message_id = (request.tag if request else None), new_message_id()
        self.emit(ResponseStarted(tag, message_id), self.generation)
        self.response = Response(self.generation, self, self.services, self.tools, history, settings,
                                 on_done=self._response_done, tag=tag, message_id=message_id)

    async def _on_create_response(self, request: CreateResponse) -> None:
        if self.response is not None or self._queued is not None:
            self.error("a response is already in progress", "response", "response_in_progress", ref=request.tag)
            return
        self._queued = request
        await self._start_queued()

    async def _start_queued(self) -> None:
        """A requested response starts once the turns and images before it are in the conversation."""
        if self._queued is None or self.response is not None or self._transcribing or self._describing:
            return
        request, self._queued = self._queued, None
        self.turn_id = await self.store.start_turn(self.session_id)
        self._turn_times = {"transcript_at": time.time()}
        await self._respond(request)

    async def _response_done(self, response: Response) -> None:
        self.submit(_ResponseFinished(response))

    async def _on_response_finished(self, response: Response) -> None:
        if response is not self.response:
            return  # already handled by a barge-in
        self.response = None
        self._keep_reply(response)
        if response.failure is None:
            self._pending = None
            if not response.deferred_calls:  # with deferred calls the text is on the tool-call message
                self.context.add(ChatMessage(role="assistant", content=response.full_text), response.message_id)
        failure = response.failure
        status = "failed" if failure else "incomplete" if response.finish_reason == "length" else "completed"
        error = ErrorEvent(failure.message, failure.phase, failure.code) if failure else None
        self.emit(ResponseEnded(response.tag, response.message_id, response.generation, status,
                                input_tokens=response.input_tokens, output_tokens=response.output_tokens,
                                error=error))
        await self._record_turn(response, interrupted=False)
        await self._set_state(State.LISTENING)
        if self._respond_after and self.turns.auto_respond and self._queued is None:
            self._respond_after = False
            await self._respond()
        await self._start_queued()

    def _keep_reply(self, response: Response) -> None:
        """Its tool-call turns join the context, named by call id; its audio timing is kept for truncation."""
        self.context.messages += response.new_messages
        for message in response.new_messages:
            for call in message.tool_calls or []:
                self.context.name(message, call.id)
        if response.deferred_calls:
            self.context.name(response.new_messages[-1], response.message_id)
        self._replies[response.message_id] = response
        while len(self._replies) > KEPT_REPLIES:
            self._replies.popitem(last=False)

    async def _barge_in(self, reason: str) -> None:
        """Stop talking now: tell the client first, then cancel downstream work and cut the reply."""
        if self.response is None:
            if self.state in (State.TRANSCRIBING, State.THINKING):
                await self._set_state(State.LISTENING)
            return
        self._turn_times.setdefault("barge_in_at", time.time())
        self.generation += 1  # everything the old response still emits is dropped from here on
        self.outbox.drop_generations_below(self.generation)
        self.emit(Interrupted(reason))
        self.emit(StopSpeaking())
        self._turn_times["stopped_at"] = time.time()
        await self._cancel_response(reason)
        await self._set_state(State.LISTENING)

    async def _cancel_response(self, reason: str | None) -> None:
        response, self.response = self.response, None
        await response.cancel()
        heard = response.heard_text()
        self._keep_reply(response)
        self.context.add(ChatMessage(role="assistant", content=heard), response.message_id)
        if response.reply_message_id is not None:
            await self.store.update_message(response.reply_message_id, content=heard, status="interrupted",
                                            full_content=response.full_text)
        else:
            stored = await self.store.add_message(self.session_id, "assistant", heard, status="interrupted",
                                                  turn_id=self.turn_id)
            response.reply_message_id = stored.id
            if response.full_text != heard:
                await self.store.update_message(stored.id, full_content=response.full_text)
        self._pending = None
        self.emit(ResponseEnded(response.tag, response.message_id, response.generation, "cancelled", reason,
                                input_tokens=response.input_tokens, output_tokens=response.output_tokens))
        await self._record_turn(response, interrupted=True)

    async def _record_turn(self, response: Response, interrupted: bool) -> None:
        times = dict(self._turn_times)
        if response.first_token_at:
            times["first_token_at"] = response.first_token_at
        if self.turn_id is not None:
            await self.store.record_turn(self.turn_id, interrupted=interrupted, **times)
        TURN_METRICS.observe(times)

    async def _retry(self) -> None:
        pending = self._pending
        if pending is None or self.response is not None:
            self.error("there is no failed turn to retry", "session", "nothing_to_retry")
            return
        if pending.kind == "stt" and pending.audio is not None:
            self._utterance += 1
            await self._set_state(State.TRANSCRIBING)
            self._spawn(self._transcribe(self._utterance, pending.audio, partial=False))
        else:
            await self._respond()

    # ---- what the response asks of the session (ResponseHost) ------------------------------

    async def first_audio(self, generation: int) -> None:
        done = asyncio.get_running_loop().create_future()
        self.submit(_FirstAudio(generation, done))
        await done

    async def store_tool_call(self, call: ToolCall) -> None:
        await self.store.add_tool_call(self.session_id, call.id, call.name, call.arguments)

    async def finish_tool_call(self, call_id: str, result: Any, ok: bool) -> None:
        await self.store.finish_tool_call(call_id, json.dumps(result, default=str), "ok" if ok else "error")

    async def store_reply(self, text: str) -> int:
        message = await self.store.add_message(self.session_id, "assistant", text, turn_id=self.turn_id)
        return message.id

    # ---- images ---------------------------------------------------------------------------------

    def _on_image(self, image: ImageIn) -> None:
        if len(image.data) > self.options.max_image_bytes:
            self.error(f"image of {len(image.data)} bytes is over the {self.options.max_image_bytes} byte limit",
                       "vision", "image_too_large", ref=image.message_id)
            return

        async def describe() -> None:
            try:
                result: Any = await self.services.describe_image(image.data, image.prompt)
            except ServiceError as error:
                result = error
            self.submit(_Described(image.data, image.prompt, result, image.message_id))

        self._describing += 1
        self._spawn(describe())

    async def _on_described(self, message: _Described) -> None:
        self._describing -= 1
        try:
            await self._add_description(message)
        finally:
            await self._start_queued()

    async def _add_description(self, message: _Described) -> None:
        if isinstance(message.result, ServiceError):
            self.error(message.result.message, "vision", message.result.code, ref=message.message_id)
            return
        description = message.result
        await self.store.add_image(self.session_id, message.image, _sniff_mime(message.image), message.prompt,
                                   description)
        note = f"The user shared an image. What it shows: {description}"
        await self.store.add_message(self.session_id, "system", note, turn_id=self.turn_id)
        self.context.add(ChatMessage(role="system", content=note), message.message_id)
        self.emit(VisionResult(description))

    # ---- clients that manage turns and the conversation themselves --------------------------

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


def _as_chat(message: StoredMessage) -> ChatMessage:
    calls = [ToolCall(**c) for c in message.tool_calls] if message.tool_calls else None
    return ChatMessage(role=message.role, content=message.content, tool_calls=calls,
                       tool_call_id=message.tool_call_id)


def _message_wire(message: StoredMessage) -> dict[str, Any]:
    return {"role": message.role, "content": message.content, "status": message.status,
            "createdAt": message.created_at}


def _sniff_mime(data: bytes) -> str:
    signatures = {b"\x89PNG": "image/png", b"\xff\xd8\xff": "image/jpeg", b"GIF8": "image/gif", b"RIFF": "image/webp"}
    return next((mime for magic, mime in signatures.items() if data.startswith(magic)), "application/octet-stream")
