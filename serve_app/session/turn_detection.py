"""When the user starts and stops a turn, from per-frame speech probabilities.

Positions are sample counts in the session's 16 kHz input stream, not wall-clock times, so the
same audio gives the same decisions however fast it arrives. The end-of-turn model is asked
after a short pause; its answer comes back through ``on_completion``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from serve_app.session.options import TurnDetectionOptions

SAMPLE_RATE = 16000
FRAME_SAMPLES = 512
FRAME_MS = FRAME_SAMPLES * 1000 // SAMPLE_RATE  # 32
HYSTERESIS = 0.15  # silero's own recipe: speech ends below threshold - 0.15


@dataclass
class Onset:
    """First frame above threshold: possibly speech (a barge-in pauses playback here)."""

    at_sample: int


@dataclass
class OnsetLost:
    """The onset did not last min_speech_ms: noise, a click or an echo."""


@dataclass
class SpeechConfirmed:
    start_sample: int


@dataclass
class PossibleTurnEnd:
    """Speech paused long enough that the turn may end here: work on an answer can start."""

    pause_id: int
    end_sample: int


@dataclass
class PauseCheck:
    """Speech paused at end_sample long enough to ask the end-of-turn model.

    It hears the audio up to ``heard_until``, the pause included: Smart Turn was trained on turns
    that end in the silence after them (Pipecat feeds it that way). Over 32 finished clips it called
    28 finished when cut at the last voiced frame, 29 with the pause, and was surer on most
    (bench/smart_turn_window.py).
    """

    pause_id: int
    end_sample: int
    heard_until: int


@dataclass
class SpeechResumed:
    """Speech came back during a pause: the turn goes on (a speculative answer to it is void)."""

    pause_id: int


@dataclass
class TurnEnded:
    start_sample: int
    end_sample: int
    reason: str  # smart_turn | silence | max_silence | max_length


Signal = Onset | OnsetLost | SpeechConfirmed | PossibleTurnEnd | PauseCheck | SpeechResumed | TurnEnded


class _Phase(Enum):
    QUIET = 0
    ONSET = 1
    SPEAKING = 2
    PAUSE = 3


class TurnDetector:
    """Speech onset, confirmation and end of turn for one input stream."""

    def __init__(self, options: TurnDetectionOptions, *, smart_turn_available: bool) -> None:
        self.options = options
        self.threshold = options.threshold
        self.min_speech_ms = options.min_speech_ms
        self.smart_turn = options.smart_turn and smart_turn_available
        self._phase = _Phase.QUIET
        self._start = 0
        self._speech_frames = 0
        self._pause_start = 0
        self._silence_frames = 0
        self._pause_id = 0
        self._asked = False
        self._flagged = False  # PossibleTurnEnd sent for this pause
        self._model_verdict: bool | None = None  # None: not answered (or unavailable)
        self._model_failed = False

    @property
    def in_speech(self) -> bool:
        return self._phase in (_Phase.SPEAKING, _Phase.PAUSE)

    @property
    def voiced(self) -> bool:
        """Speech is going on now, not a pause in it."""
        return self._phase is _Phase.SPEAKING

    @property
    def speech_start(self) -> int:
        return self._start

    def set_sensitivity(self, threshold: float, min_speech_ms: int) -> None:
        """Stricter while the assistant speaks (barge-in), normal while listening."""
        self.threshold, self.min_speech_ms = threshold, min_speech_ms

    def reset(self) -> None:
        self._phase = _Phase.QUIET
        self._speech_frames = self._silence_frames = 0
        self._asked, self._model_verdict, self._model_failed = False, None, False

    def push(self, probability: float, frame_end: int) -> list[Signal]:
        frame_start = frame_end - FRAME_SAMPLES
        is_speech = probability >= self.threshold
        is_silence = probability < self.threshold - HYSTERESIS
        if self._phase is _Phase.QUIET:
            if is_speech:
                self._phase, self._start, self._speech_frames = _Phase.ONSET, frame_start, 1
                return [Onset(frame_start), *self._confirm_if_long_enough()]
            return []
        if self._phase is _Phase.ONSET:
            if is_silence:
                self._phase = _Phase.QUIET
                return [OnsetLost()]
            if is_speech:
                self._speech_frames += 1
            return self._confirm_if_long_enough()
        if self._phase is _Phase.SPEAKING:
            if self._too_long(frame_end):
                return [self._end(frame_end, "max_length")]
            if is_silence:
                self._phase, self._pause_start, self._silence_frames = _Phase.PAUSE, frame_start, 1
                self._pause_id += 1
                self._asked, self._flagged, self._model_verdict, self._model_failed = False, False, None, False
                return self._pause_decision()
            return []
        # PAUSE
        if is_speech:
            self._phase = _Phase.SPEAKING
            return [SpeechResumed(self._pause_id)]
        self._silence_frames += 1
        if self._too_long(frame_end):
            return [self._end(self._pause_start, "max_length")]
        return self._pause_decision()

    def on_completion(self, pause_id: int, probability: float | None) -> list[Signal]:
        """The end-of-turn model's answer for a pause (None: the model failed)."""
        if self._phase is not _Phase.PAUSE or pause_id != self._pause_id:
            return []  # speech resumed meanwhile: the answer is stale
        if probability is None:
            self._model_failed = True
        else:
            self._model_verdict = probability >= self.options.smart_turn_threshold
        return self._pause_decision()

    def _confirm_if_long_enough(self) -> list[Signal]:
        if self._speech_frames * FRAME_MS >= self.min_speech_ms:
            self._phase = _Phase.SPEAKING
            return [SpeechConfirmed(self._start)]
        return []

    def _too_long(self, frame_end: int) -> bool:
        return frame_end - self._start >= self.options.max_utterance_s * SAMPLE_RATE

    def _pause_decision(self) -> list[Signal]:
        silence_ms = self._silence_frames * FRAME_MS
        signals: list[Signal] = []
        if not self._flagged and silence_ms >= self.options.speculate_after_ms:
            self._flagged = True
            signals.append(PossibleTurnEnd(self._pause_id, self._pause_start))
        if not self.smart_turn or self._model_failed:
            if silence_ms >= self.options.min_silence_ms:
                signals.append(self._end(self._pause_start, "silence"))
            return signals
        if self._model_verdict is True:
            return [*signals, self._end(self._pause_start, "smart_turn")]
        if silence_ms >= self.options.max_silence_ms:
            return [*signals, self._end(self._pause_start, "max_silence")]
        if not self._asked and silence_ms >= self.options.smart_turn_check_after_ms:
            self._asked = True
            heard_until = self._pause_start + self._silence_frames * FRAME_SAMPLES
            signals.append(PauseCheck(self._pause_id, self._pause_start, heard_until))
        return signals

    def _end(self, end_sample: int, reason: str) -> TurnEnded:
        start = self._start
        self.reset()
        return TurnEnded(start, end_sample, reason)
