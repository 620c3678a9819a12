"""The session actor: one task owns a conversation's state and consumes its inbox.

Client commands, VAD frames, model results and response milestones all arrive through one
queue, so no two coroutines race on the state. States: idle -> listening -> transcribing ->
thinking -> speaking, and a barge-in goes back to listening. Everything said or answered is
written to the store before it is announced.

The handlers live in one module per concern, mixed into ``Session``: lifecycle (start, resume,
stop), listening (audio, VAD, end of turn, transcripts), answering (responses, barge-in, retry),
images, and conversation_edits (commands from the OpenAI Realtime adapter). This module keeps
the state, the inbox loop and the dispatch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from typing import Any

from serve_app.clients.models import ModelServices, ServiceError
from serve_app.clients.vad_ticker import VadFrames, VadStream, VadTicker
from serve_app.metrics import TURN_METRICS
from serve_app.session.answering import Answering
from serve_app.session.audio_input import AudioTimeline, InputResampler
from serve_app.session.config import SessionConfig
from serve_app.session.context import ConversationContext
from serve_app.session.conversation_edits import ConversationEdits
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
    Outgoing,
    Ping,
    Pong,
    ResumeSession,
    RetryTurn,
    StartConversation,
    State,
    StateChanged,
    StopConversation,
    ToolResult,
    TruncateReply,
    UserText,
)
from serve_app.session.images import Images
from serve_app.session.inbox import (
    Described,
    FirstAudio,
    PendingInput,
    ResponseFinished,
    Transcribed,
    Verdict,
)
from serve_app.session.lifecycle import SessionLifecycle
from serve_app.session.listening import Listening
from serve_app.session.options import SessionOptions
from serve_app.session.outbox import Outbox
from serve_app.session.policy import ReplyPolicy, TurnPolicy
from serve_app.session.response import Response
from serve_app.session.smart_turn_runner import SmartTurnRunner
from serve_app.session.speculation import SpeculativeTurn
from serve_app.session.tools import BuiltinTools
from serve_app.session.transcription_load import TranscriptionLoad
from serve_app.session.turn_detection import TurnDetector
from serve_app.store import SessionStore

logger = logging.getLogger(__name__)


class Session(SessionLifecycle, Listening, Answering, Images, ConversationEdits):
    def __init__(self, services: ModelServices, store: SessionStore, options: SessionOptions, *,
                 vad_ticker: VadTicker | None, smart_turn: SmartTurnRunner | None,
                 stt_load: TranscriptionLoad, registry: dict[str, Session] | None = None) -> None:
        self.services, self.store, self.options = services, store, options
        self.stt_load = stt_load  # shared by the host's sessions
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
        self._pending: PendingInput | None = None
        self._speculation: SpeculativeTurn | None = None  # the utterance up to the current pause, answered early
        self._partial_anchor = 0  # partial transcripts decode from here (timeline position) ...
        self._partial_prefix = ""  # ... and put this text, already transcribed, before theirs
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

    def _spawn(self, coroutine) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._helpers.add(task)
        task.add_done_callback(self._helpers.discard)
        return task

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
        elif isinstance(message, Verdict):
            await self._apply_signals(self._detector.on_completion(message.pause_id, message.probability))
        elif isinstance(message, Transcribed):
            await self._on_transcribed(message)
        elif isinstance(message, FirstAudio):
            if message.generation == self.generation:
                self._turn_times.setdefault("first_audio_at", time.time())
                await self._set_state(State.SPEAKING)
            message.done.set_result(None)
        elif isinstance(message, ResponseFinished):
            await self._on_response_finished(message.response)
        elif isinstance(message, Described):
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
            await self._drop_speculation("audio_cleared")
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
