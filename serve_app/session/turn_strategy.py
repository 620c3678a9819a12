"""How a turn ends: by server VAD and fixed silence, by the end-of-turn model, or by the client.

A client configures a wire-neutral ``TurnPolicy``; ``turn_strategy`` makes the strategy object
from it. Voice strategies own the ``TurnDetector`` and turn VAD frames into turn signals; the
semantic one also asks the end-of-turn model at a pause (its answer comes back through the inbox
as a ``Verdict``). ``ManualTurns`` ignores voice: a turn ends only when the client commits it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from serve_app.clients.vad_ticker import VadFrames
from serve_app.session.audio_input import InputAudio
from serve_app.session.channel import SessionChannel
from serve_app.session.events import State
from serve_app.session.inbox import Verdict
from serve_app.session.options import BargeInOptions, TurnDetectionOptions
from serve_app.session.policy import TurnPolicy
from serve_app.session.smart_turn_runner import SmartTurnRunner
from serve_app.session.turn_detection import FRAME_SAMPLES, PauseCheck, Signal, TurnDetector

logger = logging.getLogger(__name__)


class TurnStrategy:
    """Voice turns: VAD frames -> onset, speech, pauses and turn ends."""

    listens = True  # the microphone goes to the VAD

    def __init__(self, policy: TurnPolicy, options: TurnDetectionOptions, barge_in: BargeInOptions,
                 channel: SessionChannel, *, smart_turn_available: bool, vad_degraded: bool = False) -> None:
        self.options, self.barge_in, self.channel = options, barge_in, channel
        self.responds = policy.auto_respond  # answer as soon as a turn ends
        self.interrupts = policy.interrupt  # the user's speech cancels a response in progress
        self.partials = policy.partial_transcripts
        self.detector = TurnDetector(options, smart_turn_available=smart_turn_available)
        self.vad_degraded = vad_degraded
        if vad_degraded:
            self.detector.smart_turn = False
        self.on_state(channel.state)

    @property
    def in_speech(self) -> bool:
        return self.detector.in_speech

    @property
    def voiced(self) -> bool:
        return self.detector.voiced

    @property
    def speech_start(self) -> int:
        return self.detector.speech_start

    def reset(self) -> None:
        self.detector.reset()

    def on_state(self, state: State) -> None:
        """Stricter while the assistant speaks, so its own echo does not count as a barge-in."""
        sensitivity = self.barge_in if state is State.SPEAKING else self.options
        self.detector.set_sensitivity(sensitivity.threshold, sensitivity.min_speech_ms)

    def on_frames(self, frames: VadFrames) -> Iterator[list[Signal]]:
        """The signals of each frame in turn; lazy, so a state change after one frame applies to the next."""
        if frames.degraded and not self.vad_degraded:
            self.vad_degraded = True
            self.channel.error(f"voice activity detection is unavailable ({frames.error}); using energy and "
                               "fixed silence", "vad", "service_unavailable")
            self.detector.smart_turn = False
        end = frames.end_sample - (len(frames.probabilities) - 1) * FRAME_SAMPLES
        for probability in frames.probabilities:
            yield self._checked(self.detector.push(float(probability), end))
            end += FRAME_SAMPLES

    def on_verdict(self, verdict: Verdict) -> list[Signal]:
        return self._checked(self.detector.on_completion(verdict.pause_id, verdict.probability))

    def _checked(self, signals: list[Signal]) -> list[Signal]:
        for signal in signals:
            if isinstance(signal, PauseCheck):
                self.ask_end_of_turn(signal)
        return [s for s in signals if not isinstance(s, PauseCheck)]

    def ask_end_of_turn(self, check: PauseCheck) -> None:
        raise AssertionError("a detector without the end-of-turn model never asks it")


class ServerVadTurns(TurnStrategy):
    """A turn ends after a fixed silence."""

    def __init__(self, policy: TurnPolicy, options: TurnDetectionOptions, barge_in: BargeInOptions,
                 channel: SessionChannel, *, vad_degraded: bool = False) -> None:
        super().__init__(policy, options, barge_in, channel, smart_turn_available=False, vad_degraded=vad_degraded)


class SemanticTurns(TurnStrategy):
    """A turn ends when the end-of-turn model hears a finished sentence (or after a longer silence)."""

    def __init__(self, policy: TurnPolicy, options: TurnDetectionOptions, barge_in: BargeInOptions,
                 channel: SessionChannel, smart_turn: SmartTurnRunner, audio: InputAudio, *,
                 vad_degraded: bool = False) -> None:
        super().__init__(policy, options, barge_in, channel, smart_turn_available=True, vad_degraded=vad_degraded)
        self.smart_turn, self.audio = smart_turn, audio

    def ask_end_of_turn(self, check: PauseCheck) -> None:
        # from a little before the speech (as the transcript hears it) through the pause so far
        audio = self.audio.slice(self.audio.utterance_start(self.detector.speech_start), check.heard_until)

        async def ask() -> None:
            try:
                probability = await self.smart_turn.completion_probability(audio)
            except Exception:
                logger.exception("end-of-turn model failed")
                probability = None
            self.channel.submit(Verdict(check.pause_id, probability))

        self.channel.spawn(ask())


class ManualTurns(TurnStrategy):
    """The client ends each turn (CommitAudio): no VAD turns, no barge-in by voice."""

    listens = False

    def __init__(self, policy: TurnPolicy, options: TurnDetectionOptions, barge_in: BargeInOptions,
                 channel: SessionChannel, *, vad_degraded: bool = False) -> None:
        super().__init__(policy, options, barge_in, channel, smart_turn_available=False, vad_degraded=vad_degraded)

    def on_frames(self, frames: VadFrames) -> Iterator[list[Signal]]:
        return iter(())

    def on_verdict(self, verdict: Verdict) -> list[Signal]:
        return []


def turn_strategy(policy: TurnPolicy, defaults: TurnDetectionOptions, barge_in: BargeInOptions,
                  channel: SessionChannel, smart_turn: SmartTurnRunner | None, audio: InputAudio, *,
                  vad_degraded: bool = False) -> TurnStrategy:
    options = policy.detection or defaults
    if policy.manual:
        return ManualTurns(policy, options, barge_in, channel, vad_degraded=vad_degraded)
    if options.smart_turn and smart_turn is not None:
        return SemanticTurns(policy, options, barge_in, channel, smart_turn, audio, vad_degraded=vad_degraded)
    return ServerVadTurns(policy, options, barge_in, channel, vad_degraded=vad_degraded)
