"""Audio in, VAD frames, end of turn, transcription: a spoken turn up to its transcript."""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from deployments.llm import ChatMessage
from serve_app.clients.models import ServiceError
from serve_app.clients.vad_ticker import VadFrames
from serve_app.metrics import TURN_METRICS
from serve_app.session.audio_input import SAMPLE_RATE, AudioFormatError
from serve_app.session.events import (
    AudioIn,
    SpeechStarted,
    SpeechStopped,
    State,
    TranscriptEmpty,
    TranscriptFinal,
    TranscriptPartial,
    UserAudioCommitted,
)
from serve_app.session.inbox import PendingInput, Transcribed, Verdict, new_message_id
from serve_app.session.speculation import HeldHost, SpeculativeTurn
from serve_app.session.turn_detection import (
    Onset,
    OnsetLost,
    PauseCheck,
    PossibleTurnEnd,
    SpeechConfirmed,
    SpeechResumed,
    TurnEnded,
)

logger = logging.getLogger(__name__)

PARTIAL_WINDOW_S = 6  # a partial covering this much audio is frozen and the next one starts after it


class Listening:
    """Part of Session (serve_app/session/engine.py); the state it uses is made in Session.__init__."""

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
                self._partial_anchor, self._partial_prefix = self._utterance_start(signal.start_sample), ""
                self.emit(SpeechStarted(signal.start_sample * 1000 // SAMPLE_RATE, self._utterance_id))
                if self.turns.interrupt and (self.response is not None
                                             or self.state in (State.TRANSCRIBING, State.THINKING)):
                    await self._barge_in("user_speech")
            elif isinstance(signal, PossibleTurnEnd):
                self._speculate(signal)
            elif isinstance(signal, PauseCheck):
                self._ask_end_of_turn(signal)
            elif isinstance(signal, SpeechResumed):
                await self._drop_speculation("speech_resumed")
            elif isinstance(signal, TurnEnded):
                await self._end_turn(signal)

    # ---- speculative turn end (serve_app/session/speculation.py) ------------------------------

    def _speculate(self, check: PossibleTurnEnd) -> None:
        """Transcribe the utterance so far while the end-of-turn model decides."""
        if not (self.options.speculative_turns and self.turns.auto_respond) or self.response is not None:
            return
        if self._speculation is not None and self._speculation.committed:
            return  # the last turn's transcript is not back yet: it keeps its place
        start = self._utterance_start(self._detector.speech_start)
        spec = SpeculativeTurn(check.pause_id, self._detector.speech_start, check.end_sample, self._utterance_id,
                               self._utterance)
        audio = self._timeline.slice(start, check.end_sample)
        spec.transcription = self._spawn(self._transcribe(self._utterance, audio, partial=False,
                                                          message_id=spec.message_id, speculative=spec))
        self._speculation = spec
        TURN_METRICS.speculation.labels(outcome="started").inc()

    async def _drop_speculation(self, reason: str) -> None:
        """Cancel an answer started early; a committed turn still waiting for its transcript stays."""
        spec = self._speculation
        if spec is None or spec.committed:
            return
        self._speculation = None
        await spec.cancel(reason)

    async def _on_speculative_transcript(self, spec: SpeculativeTurn, result: Any) -> None:
        spec.result, spec.transcript_at = result, time.time()
        if spec.committed:  # the turn ended before its transcript was back: it is the final one now
            self._speculation = None
            self._transcribing.discard(spec.message_id)
            self._turn_times["transcript_at"] = spec.transcript_at
            try:
                await self._on_final_transcript(Transcribed(spec.utterance, result, False, spec.message_id))
            finally:
                await self._start_queued()
            return
        if isinstance(result, ServiceError) or not result.text.strip():
            return
        text = result.text.strip()
        self._partial_anchor, self._partial_prefix = spec.end_sample, text  # partials go on from here
        if self.response is None and self._queued is None:
            spec.host = HeldHost(self)
            spec.draft = self._draft_response(text, spec.host)

    async def _commit_speculation(self, spec: SpeculativeTurn) -> None:
        """The turn ended at the speculated pause: its transcript (and draft) become the turn's."""
        spec.committed = True
        self._pending = PendingInput("stt", self._timeline.slice(self._utterance_start(spec.start_sample),
                                                                    spec.end_sample))
        if not spec.transcribed:
            self._transcribing.add(spec.message_id)
            await self._set_state(State.TRANSCRIBING)
            return  # _on_speculative_transcript continues
        self._speculation = None
        result = spec.result
        if isinstance(result, ServiceError) or not result.text.strip():
            await self._set_state(State.TRANSCRIBING)
            await self._on_final_transcript(Transcribed(spec.utterance, result, False, spec.message_id))
            return
        self._turn_times["transcript_at"] = spec.transcript_at
        TURN_METRICS.speculation.labels(outcome="transcript_used").inc()
        await self._set_state(State.TRANSCRIBING)  # already done, but every turn passes through it
        await self._user_turn(result.text.strip(), spec.message_id, draft=spec.take_draft())

    def _ask_end_of_turn(self, check: PauseCheck) -> None:
        audio = self._timeline.slice(self._detector.speech_start, check.end_sample)

        async def ask() -> None:
            try:
                probability = await self.smart_turn.completion_probability(audio)
            except Exception:
                logger.exception("end-of-turn model failed")
                probability = None
            self.submit(Verdict(check.pause_id, probability))

        self._spawn(ask())

    def _maybe_partial(self, position: int) -> None:
        """A partial decodes only the audio since its anchor (the last speculative transcript, or the
        last long partial), so its cost stays flat however long the user talks."""
        wanted = self.options.partial_transcripts and self.turns.partial_transcripts
        if not (wanted and self._detector.in_speech) or self._partial_in_flight:
            return
        if not self.stt_load.partial_allowed():
            return
        if (position - self._last_partial_at) * 1000 < self.options.partial_interval_ms * SAMPLE_RATE:
            return
        self._last_partial_at = position
        self._partial_in_flight = True
        anchor = max(self._partial_anchor, self._utterance_start(self._detector.speech_start))
        audio = self._timeline.slice(anchor, position)
        self._spawn(self._transcribe(self._utterance, audio, partial=True, partial_span=(anchor, position)))

    def _utterance_start(self, speech_start: int) -> int:
        return max(self._buffer_start, speech_start - self.turn_options.prefix_padding_ms * SAMPLE_RATE // 1000)

    async def _end_turn(self, ended: TurnEnded) -> None:
        self.emit(SpeechStopped(ended.end_sample * 1000 // SAMPLE_RATE, self._utterance_id))
        start = self._utterance_start(ended.start_sample)
        self._buffer_start = ended.end_sample
        # audio arrives in real time: the speech ended as long ago as the audio after it lasts
        spoken_end = time.time() - (self._timeline.end - ended.end_sample) / SAMPLE_RATE
        self._turn_times = {"speech_end_at": spoken_end, "turn_end_at": time.time()}
        spec = self._speculation
        if spec is not None and spec.matches(ended.start_sample, ended.end_sample):
            self.emit(UserAudioCommitted(spec.message_id, start * 1000 // SAMPLE_RATE,
                                         ended.end_sample * 1000 // SAMPLE_RATE))
            await self._commit_speculation(spec)
            return
        await self._drop_speculation("turn_ended_elsewhere")
        await self._committed(self._utterance_id, start, ended.end_sample)

    async def _commit_audio(self, message_id: str | None) -> None:
        """The client ends the turn: everything since the last turn is the user's message."""
        await self._drop_speculation("manual_commit")
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
        self._pending = PendingInput("stt", audio)
        self._transcribing.add(message_id)
        self._spawn(self._transcribe(self._utterance, audio, partial=False, message_id=message_id))

    async def _transcribe(self, utterance: int, audio: np.ndarray, partial: bool, message_id: str = "",
                          speculative: SpeculativeTurn | None = None,
                          partial_span: tuple[int, int] | None = None) -> None:
        try:
            with self.stt_load.in_flight(partial):
                result: Any = await self.services.transcribe(audio)
        except ServiceError as error:
            result = error
        self.submit(Transcribed(utterance, result, partial, message_id, speculative, partial_span))

    async def _on_transcribed(self, message: Transcribed) -> None:
        if message.speculative is not None:
            if message.speculative is self._speculation:
                await self._on_speculative_transcript(message.speculative, message.result)
            return  # a pause the user talked through
        if message.partial:
            self._partial_in_flight = False
            if (message.utterance == self._utterance and self._detector.in_speech
                    and not isinstance(message.result, ServiceError) and message.result.text):
                text = " ".join(t for t in (self._partial_prefix, message.result.text.strip()) if t)
                anchor, end = message.partial_span
                if anchor == self._partial_anchor and (end - anchor) >= PARTIAL_WINDOW_S * SAMPLE_RATE:
                    self._partial_anchor, self._partial_prefix = end, text  # long enough: freeze it
                self.emit(TranscriptPartial(text))
            return
        self._transcribing.discard(message.message_id)
        try:
            await self._on_final_transcript(message)
        finally:
            await self._start_queued()

    async def _on_final_transcript(self, message: Transcribed) -> None:
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
