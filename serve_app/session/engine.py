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
    AudioIn,
    Command,
    Disconnected,
    ErrorEvent,
    Event,
    ImageIn,
    Interrupt,
    Interrupted,
    Outgoing,
    Ping,
    Pong,
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
    TranscriptFinal,
    TranscriptPartial,
    UserText,
    VisionResult,
)
from serve_app.session.options import SessionOptions
from serve_app.session.outbox import Outbox
from serve_app.session.response import Response, ResponseSettings
from serve_app.session.smart_turn_runner import SmartTurnRunner
from serve_app.session.tools import BuiltinTools
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


@dataclass
class _Described:
    image: bytes
    prompt: str | None
    result: Any  # str | ServiceError


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
                 registry: dict[str, Session] | None = None) -> None:
        self.services, self.store, self.options = services, store, options
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
        self._detector = TurnDetector(options.turn_detection, smart_turn_available=smart_turn is not None)
        self._utterance = 0
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

    def error(self, message: str, phase: str, code: str) -> None:
        TURN_METRICS.errors.labels(phase=phase, code=code).inc()
        self.emit(ErrorEvent(message, phase, code))

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
            td = self.options.turn_detection
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
        if self._vad_stream is not None:
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
                if self.state is State.SPEAKING and self.response is not None:
                    self._turn_times["barge_in_at"] = time.time()
                    self.response.pause_audio()
            elif isinstance(signal, OnsetLost):
                if self.response is not None:
                    self.response.resume_audio()  # noise or echo: a false barge-in resumes
            elif isinstance(signal, SpeechConfirmed):
                self._utterance += 1
                self._last_partial_at = signal.start_sample
                self.emit(SpeechStarted(signal.start_sample * 1000 // SAMPLE_RATE))
                if self.response is not None or self.state in (State.TRANSCRIBING, State.THINKING):
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
        if not (self.options.partial_transcripts and self._detector.in_speech) or self._partial_in_flight:
            return
        if (position - self._last_partial_at) * 1000 < self.options.partial_interval_ms * SAMPLE_RATE:
            return
        self._last_partial_at = position
        self._partial_in_flight = True
        audio = self._timeline.slice(self._utterance_start(self._detector.speech_start), position)
        self._spawn(self._transcribe(self._utterance, audio, partial=True))

    def _utterance_start(self, speech_start: int) -> int:
        return max(0, speech_start - self.options.turn_detection.prefix_padding_ms * SAMPLE_RATE // 1000)

    async def _end_turn(self, ended: TurnEnded) -> None:
        self.emit(SpeechStopped(ended.end_sample * 1000 // SAMPLE_RATE))
        audio = self._timeline.slice(self._utterance_start(ended.start_sample), ended.end_sample)
        self._turn_times = {"speech_end_at": time.time()}
        await self._set_state(State.TRANSCRIBING)
        self._pending = _Pending("stt", audio)
        self._spawn(self._transcribe(self._utterance, audio, partial=False))

    async def _transcribe(self, utterance: int, audio: np.ndarray, partial: bool) -> None:
        try:
            result: Any = await self.services.transcribe(audio)
        except ServiceError as error:
            result = error
        self.submit(_Transcribed(utterance, result, partial))

    async def _on_transcribed(self, message: _Transcribed) -> None:
        if message.partial:
            self._partial_in_flight = False
            if (message.utterance == self._utterance and self._detector.in_speech
                    and not isinstance(message.result, ServiceError) and message.result.text):
                self.emit(TranscriptPartial(message.result.text))
            return
        if isinstance(message.result, ServiceError):
            if message.utterance == self._utterance and self.state is State.TRANSCRIBING:
                error = message.result
                self.error(f"{error.message}; send retry_turn to try this turn again", error.phase, error.code)
                await self._set_state(State.LISTENING)
            return
        text = message.result.text.strip()
        if message.utterance != self._utterance or self.state is not State.TRANSCRIBING:
            if text:  # the user went on talking: what they said first is kept, answered with the rest
                await self.store.add_message(self.session_id, "user", text, turn_id=self.turn_id)
                self.context.add(ChatMessage(role="user", content=text))
                self.emit(TranscriptFinal(text))
            return
        if not text:  # noise, or a hallucination the STT service blanked
            self._pending = None
            await self._set_state(State.LISTENING)
            return
        self._turn_times["transcript_at"] = time.time()
        await self._user_turn(text)

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

    async def _user_turn(self, text: str) -> None:
        self.turn_id = await self.store.start_turn(self.session_id)
        await self.store.add_message(self.session_id, "user", text, turn_id=self.turn_id)
        self.context.add(ChatMessage(role="user", content=text))
        self.emit(TranscriptFinal(text))
        self._pending = _Pending("llm")
        await self._respond()

    async def _respond(self) -> None:
        self.generation += 1
        await self._set_state(State.THINKING)
        settings = ResponseSettings(
            instructions=self.config.instructions or self.options.instructions,
            output_rate=self.config.output_sample_rate,
            voice=self.config.voice,
            max_tokens=self.options.max_response_tokens,
            temperature=self.options.temperature,
            max_tool_rounds=self.options.max_tool_rounds,
            playback_lead_ms=self.options.playback_lead_ms,
            client_tool_timeout_s=self.options.client_tool_timeout_s,
            client_tools=self.config.tools,
        )
        history = self.context.for_llm(settings.instructions)
        self.response = Response(self.generation, self, self.services, self.tools, history, settings,
                                 on_done=self._response_done)

    async def _response_done(self, response: Response) -> None:
        self.submit(_ResponseFinished(response))

    async def _on_response_finished(self, response: Response) -> None:
        if response is not self.response:
            return  # already handled by a barge-in
        self.response = None
        self.context.messages += response.new_messages
        if response.failure is None:
            self._pending = None
            self.context.add(ChatMessage(role="assistant", content=response.full_text))
        await self._record_turn(response, interrupted=False)
        await self._set_state(State.LISTENING)

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
        self.context.messages += response.new_messages
        self.context.add(ChatMessage(role="assistant", content=heard))
        if response.reply_message_id is not None:
            await self.store.update_message(response.reply_message_id, content=heard, status="interrupted",
                                            full_content=response.full_text)
        else:
            await self.store.add_message(self.session_id, "assistant", heard, status="interrupted",
                                         turn_id=self.turn_id)
            if response.full_text != heard:
                last = (await self.store.last_messages(self.session_id, 1))[0]
                await self.store.update_message(last.id, full_content=response.full_text)
        self._pending = None
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
                       "vision", "image_too_large")
            return

        async def describe() -> None:
            try:
                result: Any = await self.services.describe_image(image.data, image.prompt)
            except ServiceError as error:
                result = error
            self.submit(_Described(image.data, image.prompt, result))

        self._spawn(describe())

    async def _on_described(self, message: _Described) -> None:
        if isinstance(message.result, ServiceError):
            self.error(message.result.message, "vision", message.result.code)
            return
        description = message.result
        await self.store.add_image(self.session_id, message.image, _sniff_mime(message.image), message.prompt,
                                   description)
        note = f"The user shared an image. What it shows: {description}"
        await self.store.add_message(self.session_id, "system", note, turn_id=self.turn_id)
        self.context.add(ChatMessage(role="system", content=note))
        self.emit(VisionResult(description))


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
