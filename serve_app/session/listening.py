"""Listening: a spoken turn from the microphone to the user's words handed to the ``Responder``.

The ``TurnStrategy`` says when speech starts and when a turn ends; this stage acts on it: a
barge-in when the user talks over a reply, the turn's audio to the ``Transcriber``, a speculative
transcript and draft answer at the first pause (serve_app/session/speculation.py), and the final
transcript into the conversation.
"""

from __future__ import annotations

import time
from typing import Any

from serve_app.clients.models import ServiceError
from serve_app.clients.vad_ticker import VadFrames
from serve_app.metrics import TURN_METRICS
from serve_app.session.audio_input import SAMPLE_RATE, AudioFormatError, InputAudio
from serve_app.session.audio_pace import AudioPace
from serve_app.session.channel import SessionChannel
from serve_app.session.conversation import Conversation
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
from serve_app.session.responder import Responder
from serve_app.session.speculation import Draft, HeldHost, SpeculativeTurn
from serve_app.session.transcriber import Transcriber
from serve_app.session.turn_detection import (
    Onset,
    OnsetLost,
    PossibleTurnEnd,
    Signal,
    SpeechConfirmed,
    SpeechResumed,
    TurnEnded,
)
from serve_app.session.turn_strategy import TurnStrategy


def _ms(sample: int) -> int:
    return sample * 1000 // SAMPLE_RATE


class Listener:
    def __init__(self, channel: SessionChannel, audio: InputAudio, turns: TurnStrategy, transcriber: Transcriber,
                 responder: Responder, conversation: Conversation, *, speculative_turns: bool,
                 pace: AudioPace | None = None) -> None:
        self.channel, self.audio, self.turns = channel, audio, turns
        self.pace = pace  # None: audio is taken however fast it comes
        self._vad_behind = False
        self.transcriber, self.responder, self.conversation = transcriber, responder, conversation
        self.speculative_turns = speculative_turns
        self.utterance = 0  # counts utterances, so a transcript of an older one is told apart
        self.utterance_id = ""
        self.speculation: SpeculativeTurn | None = None  # the utterance up to the current pause, answered early
        self.respond_after = False  # a turn ended during a response that was not interrupted

    def use(self, turns: TurnStrategy) -> None:
        """A client changed how turns are taken."""
        self.turns = turns
        self.audio.prefix_padding_ms = turns.options.prefix_padding_ms

    # ---- audio and turn signals ------------------------------------------------------------

    async def on_audio(self, message: AudioIn, input_rate: int) -> None:
        if self.channel.state is State.IDLE:
            return  # not listening: the microphone stream is dropped, as after stop_conversation
        if self.pace is not None and not await self._paced(len(message.pcm16) / 2 / input_rate):
            return
        skipped = self.audio.vad_skipped
        try:
            self.audio.push(message.pcm16, to_vad=self.turns.listens)
        except AudioFormatError as error:
            self.channel.error(str(error), "audio", "bad_audio")
        behind, self._vad_behind = self._vad_behind, self.audio.vad_skipped > skipped
        if self._vad_behind and not behind:  # said once per run of skipped audio
            self.channel.error("the voice detector is behind: the oldest waiting audio was skipped", "audio",
                               "audio_backlog")

    async def _paced(self, seconds: float) -> bool:
        """Audio faster than real time, past the burst, is dropped; the first drop of a run says so."""
        if await self.pace.admit(seconds):
            self.pace.dropping = False
            return True
        if not self.pace.dropping:
            self.pace.dropping = True
            self.channel.error("audio is arriving faster than real time; it is dropped until it slows down",
                               "audio", "audio_too_fast")
        return False

    async def on_frames(self, frames: VadFrames) -> None:
        for signals in self.turns.on_frames(frames):
            await self._apply(signals)
        if self.turns.listens:
            # Not in a pause: the speculative transcript covers it, and a partial started there would
            # hold the STT replica (one utterance at a time) while that transcript waits behind it.
            self.transcriber.maybe_partial(self.utterance, frames.end_sample,
                                           self.audio.utterance_start(self.turns.speech_start),
                                           wanted=self.turns.partials and self.turns.voiced)

    async def on_verdict(self, verdict: Verdict) -> None:
        await self._apply(self.turns.on_verdict(verdict))

    async def _apply(self, signals: list[Signal]) -> None:
        responder = self.responder
        for signal in signals:
            if isinstance(signal, Onset):
                if self.channel.state is State.SPEAKING and responder.busy and self.turns.interrupts:
                    responder.mark("barge_in_at")
                    responder.hold_audio()
            elif isinstance(signal, OnsetLost):
                responder.resume_audio()  # noise or echo: a false barge-in resumes
            elif isinstance(signal, SpeechConfirmed):
                self.utterance += 1
                self.utterance_id = new_message_id()
                self.transcriber.new_utterance(signal.start_sample, self.audio.utterance_start(signal.start_sample))
                self.channel.emit(SpeechStarted(_ms(signal.start_sample), self.utterance_id))
                if self.turns.interrupts and (responder.busy
                                              or self.channel.state in (State.TRANSCRIBING, State.THINKING)):
                    await responder.barge_in("user_speech")
            elif isinstance(signal, PossibleTurnEnd):
                self._speculate(signal)
            elif isinstance(signal, SpeechResumed):
                await self.drop_speculation("speech_resumed")
            elif isinstance(signal, TurnEnded):
                await self._end_turn(signal)

    # ---- speculative turn end (serve_app/session/speculation.py) ------------------------------

    def _speculate(self, check: PossibleTurnEnd) -> None:
        """Transcribe the utterance so far while the end-of-turn model decides."""
        if not (self.speculative_turns and self.turns.responds) or self.responder.busy:
            return
        if self.speculation is not None and self.speculation.committed:
            return  # the last turn's transcript is not back yet: it keeps its place
        if self.speculation is not None:  # every pause is preceded by speech that drops the last one;
            # should one ever be left, it is cancelled on its handles rather than left running
            self.channel.spawn(self.speculation.cancel("replaced"))
        speech_start = self.turns.speech_start
        spec = SpeculativeTurn(check.pause_id, speech_start, check.end_sample, self.utterance_id, self.utterance)
        audio = self.audio.slice(self.audio.utterance_start(speech_start), check.end_sample)
        self.transcriber.speculate(self.utterance, audio, spec)
        self.speculation = spec
        TURN_METRICS.speculation.labels(outcome="started").inc()

    async def drop_speculation(self, reason: str) -> None:
        """Cancel an answer started early; a committed turn still waiting for its transcript stays."""
        spec = self.speculation
        if spec is None or spec.committed:
            return
        self.speculation = None
        await spec.cancel(reason)

    async def _on_speculative_transcript(self, spec: SpeculativeTurn, result: Any) -> None:
        spec.result, spec.transcript_at = result, time.time()
        if spec.committed:  # the turn ended before its transcript was back: it is the final one now
            self.speculation = None
            self.transcriber.arrived(spec.message_id)
            self.responder.mark("transcript_at", spec.transcript_at)
            try:
                await self._on_final(Transcribed(spec.utterance, result, False, spec.message_id))
            finally:
                await self.responder.start_queued()
            return
        if isinstance(result, ServiceError) or not result.text.strip():
            return
        text = result.text.strip()
        self.transcriber.continue_after(spec.end_sample, text)
        if not self.responder.busy and self.responder.queued is None:
            host = HeldHost(self.responder)
            spec.draft = Draft(self.responder.draft(text, host), host)

    async def _commit_speculation(self, spec: SpeculativeTurn, start: int) -> None:
        """The turn ended at the speculated pause: its transcript (and draft) become the turn's."""
        spec.committed = True
        self.responder.last_input = PendingInput("stt", self.audio.slice(start, spec.end_sample))
        if not spec.transcribed:
            self.transcriber.awaiting(spec.message_id)
            await self.channel.set_state(State.TRANSCRIBING)
            return  # _on_speculative_transcript continues
        self.speculation = None
        result = spec.result
        if isinstance(result, ServiceError) or not result.text.strip():
            await self.channel.set_state(State.TRANSCRIBING)
            await self._on_final(Transcribed(spec.utterance, result, False, spec.message_id))
            return
        self.responder.mark("transcript_at", spec.transcript_at)
        TURN_METRICS.speculation.labels(outcome="transcript_used").inc()
        await self.channel.set_state(State.TRANSCRIBING)  # already done, but every turn passes through it
        await self.responder.user_turn(result.text.strip(), spec.message_id, draft=spec.take_draft())

    # ---- the end of a turn -----------------------------------------------------------------

    async def _end_turn(self, ended: TurnEnded) -> None:
        self.channel.emit(SpeechStopped(_ms(ended.end_sample), self.utterance_id))
        start = self.audio.utterance_start(ended.start_sample)
        self.audio.commit_until(ended.end_sample)
        # audio arrives in real time: the speech ended as long ago as the audio after it lasts
        spoken_end = time.time() - (self.audio.end - ended.end_sample) / SAMPLE_RATE
        self.responder.new_turn(speech_end_at=spoken_end, turn_end_at=time.time())
        spec = self.speculation
        if spec is not None and spec.matches(ended.start_sample, ended.end_sample):
            self.channel.emit(UserAudioCommitted(spec.message_id, _ms(start), _ms(ended.end_sample)))
            await self._commit_speculation(spec, start)
            return
        await self.drop_speculation("turn_ended_elsewhere")
        await self._committed(self.utterance_id, start, ended.end_sample)

    async def commit(self, message_id: str | None) -> None:
        """The client ends the turn: everything since the last turn is the user's message."""
        await self.drop_speculation("manual_commit")
        if self.turns.in_speech:
            self.channel.emit(SpeechStopped(_ms(self.audio.end), self.utterance_id))
            message_id = message_id or self.utterance_id
        else:
            self.utterance += 1
        self.turns.reset()
        end = self.audio.end
        start = self.audio.commit_until(end)
        if end <= start:
            self.channel.error("there is no audio to commit", "audio", "empty_audio", ref=message_id)
            return
        self.responder.new_turn(speech_end_at=time.time())
        await self._committed(message_id or new_message_id(), start, end)

    async def clear(self) -> None:
        """The client drops the audio since the last turn."""
        await self.drop_speculation("audio_cleared")
        self.audio.clear()
        self.turns.reset()

    async def _committed(self, message_id: str, start: int, end: int) -> None:
        audio = self.audio.slice(start, end)
        self.channel.emit(UserAudioCommitted(message_id, _ms(start), _ms(end)))
        if not self.responder.busy:
            await self.channel.set_state(State.TRANSCRIBING)
        self.responder.last_input = PendingInput("stt", audio)
        self.transcriber.final(self.utterance, audio, message_id)

    async def retry(self, audio: Any) -> None:
        """Transcribe a failed turn's audio again."""
        self.utterance += 1
        await self.channel.set_state(State.TRANSCRIBING)
        self.transcriber.again(self.utterance, audio)

    # ---- transcripts -----------------------------------------------------------------------

    async def on_transcribed(self, message: Transcribed) -> None:
        if message.speculative is not None:
            if message.speculative is self.speculation:
                await self._on_speculative_transcript(message.speculative, message.result)
            return  # a pause the user talked through
        if message.partial:
            text = self.transcriber.partial_text(message, message.utterance == self.utterance
                                                 and self.turns.in_speech)
            if text is not None:
                self.channel.emit(TranscriptPartial(text))
            return
        self.transcriber.arrived(message.message_id)
        try:
            await self._on_final(message)
        finally:
            await self.responder.start_queued()

    async def _on_final(self, message: Transcribed) -> None:
        message_id, responder = message.message_id, self.responder
        if isinstance(message.result, ServiceError):
            error = message.result
            if message.utterance == self.utterance and self.channel.state is State.TRANSCRIBING:
                self.channel.error(error.message, error.phase, error.code, ref=message_id or None, retryable=True)
                await self.channel.set_state(State.LISTENING)
            elif message_id:
                self.channel.error(error.message, error.phase, error.code, ref=message_id)
            return
        text = message.result.text.strip()
        if not text and message_id:
            self.channel.emit(TranscriptEmpty(message_id))
        if message.utterance != self.utterance or self.channel.state is not State.TRANSCRIBING:
            if text:  # the user went on talking: what they said first is kept, answered with the rest
                await self.conversation.add("user", text, message_id)
                self.channel.emit(TranscriptFinal(text, message_id))
                if responder.busy and self.turns.responds and not self.turns.interrupts:
                    self.respond_after = True  # answered once the current reply is over
            return
        if not text:  # noise, or a hallucination the STT service blanked
            responder.last_input = None
            await self.channel.set_state(State.LISTENING)
            return
        responder.mark("transcript_at")
        await responder.user_turn(text, message_id, respond=self.turns.responds)

    async def after_response(self) -> None:
        """A reply ended by itself: a turn that ended during it is answered now."""
        if self.respond_after and self.turns.responds and self.responder.queued is None:
            self.respond_after = False
            await self.responder.respond()
