"""The turn detector on synthetic probability streams: onset, confirmation, pauses, end of turn.

Positions are sample counts, so each case is exact: a frame is 512 samples (32 ms).
"""

from __future__ import annotations

from serve_app.session.options import TurnDetectionOptions
from serve_app.session.turn_detection import (
    FRAME_SAMPLES,
    OnsetLost,
    PauseCheck,
    PossibleTurnEnd,
    SpeechResumed,
    TurnDetector,
    TurnEnded,
)


def feed(detector: TurnDetector, probabilities: list[float], start_frame: int = 0) -> list[tuple[int, object]]:
    """(frame index, signal) for every signal the frames produce."""
    signals = []
    for index, probability in enumerate(probabilities, start=start_frame):
        for signal in detector.push(probability, (index + 1) * FRAME_SAMPLES):
            signals.append((index, signal))
    return signals


def kinds(signals) -> list[str]:
    return [type(signal).__name__ for _, signal in signals]


def test_a_short_blip_is_an_onset_that_is_lost_not_speech():
    detector = TurnDetector(TurnDetectionOptions(min_speech_ms=250), smart_turn_available=False)
    signals = feed(detector, [0.9, 0.9, 0.1, 0.1])
    assert kinds(signals) == ["Onset", "OnsetLost"]
    assert not detector.in_speech


def test_speech_is_confirmed_after_min_speech_ms_and_ends_after_fixed_silence_without_the_model():
    options = TurnDetectionOptions(min_speech_ms=256, min_silence_ms=320, smart_turn=False)
    detector = TurnDetector(options, smart_turn_available=True)
    signals = feed(detector, [0.9] * 20 + [0.0] * 12)
    assert kinds(signals) == ["Onset", "SpeechConfirmed", "PossibleTurnEnd", "TurnEnded"]
    confirmed_frame, confirmed = signals[1]
    assert confirmed_frame == 7 and confirmed.start_sample == 0  # 8 frames = 256 ms
    ended_frame, ended = signals[3]
    assert ended.reason == "silence" and ended.end_sample == 20 * FRAME_SAMPLES
    assert ended_frame == 20 + 10 - 1  # 10 silent frames = 320 ms


def test_the_end_of_turn_model_is_asked_once_per_pause_and_its_yes_ends_the_turn_at_the_pause():
    options = TurnDetectionOptions(min_speech_ms=64, smart_turn_check_after_ms=192)
    detector = TurnDetector(options, smart_turn_available=True)
    signals = feed(detector, [0.9] * 10 + [0.0] * 10)
    assert kinds(signals) == ["Onset", "SpeechConfirmed", "PossibleTurnEnd", "PauseCheck"]
    _, check = signals[3]
    assert isinstance(check, PauseCheck) and check.end_sample == 10 * FRAME_SAMPLES
    assert check.heard_until == 16 * FRAME_SAMPLES  # the model hears the 192 ms of pause too
    ended = detector.on_completion(check.pause_id, 0.9)
    assert len(ended) == 1 and isinstance(ended[0], TurnEnded)
    assert ended[0].reason == "smart_turn" and ended[0].end_sample == check.end_sample


def test_speech_resuming_in_a_pause_voids_that_pause_and_its_late_verdict():
    options = TurnDetectionOptions(min_speech_ms=64, smart_turn_check_after_ms=192)
    detector = TurnDetector(options, smart_turn_available=True)
    signals = feed(detector, [0.9] * 10 + [0.0] * 8 + [0.9] * 3)
    assert kinds(signals) == ["Onset", "SpeechConfirmed", "PossibleTurnEnd", "PauseCheck", "SpeechResumed"]
    _, check = signals[3]
    _, resumed = signals[4]
    assert isinstance(resumed, SpeechResumed) and resumed.pause_id == check.pause_id
    assert detector.on_completion(check.pause_id, 0.99) == []  # stale: the user went on
    assert detector.in_speech


def test_a_possible_turn_end_comes_before_the_model_is_asked_at_the_same_position():
    options = TurnDetectionOptions(min_speech_ms=64, speculate_after_ms=96, smart_turn_check_after_ms=192)
    detector = TurnDetector(options, smart_turn_available=True)
    signals = feed(detector, [0.9] * 10 + [0.0] * 6)
    (flag_frame, flag), (check_frame, check) = signals[2], signals[3]
    assert isinstance(flag, PossibleTurnEnd) and isinstance(check, PauseCheck)
    assert (flag_frame, check_frame) == (10 + 3 - 1, 10 + 6 - 1)  # 96 ms and 192 ms into the pause
    assert flag.end_sample == check.end_sample and flag.pause_id == check.pause_id


def test_an_unfinished_sentence_ends_at_max_silence_when_the_model_says_no():
    options = TurnDetectionOptions(min_speech_ms=64, smart_turn_check_after_ms=192, max_silence_ms=640)
    detector = TurnDetector(options, smart_turn_available=True)
    signals = feed(detector, [0.9] * 5 + [0.0] * 7)
    _, check = signals[-1]
    assert detector.on_completion(check.pause_id, 0.1) == []
    more = feed(detector, [0.0] * 13, start_frame=12)
    assert kinds(more) == ["TurnEnded"] and more[0][1].reason == "max_silence"
    assert more[0][1].end_sample == 5 * FRAME_SAMPLES


def test_barge_in_sensitivity_is_stricter_than_listening():
    detector = TurnDetector(TurnDetectionOptions(threshold=0.5, min_speech_ms=64), smart_turn_available=False)
    detector.set_sensitivity(0.8, 64)
    assert feed(detector, [0.7] * 5) == []  # heard while listening, not while speaking
    detector.set_sensitivity(0.5, 64)
    assert kinds(feed(detector, [0.7] * 3, start_frame=5)) == ["Onset", "SpeechConfirmed"]


def test_a_turn_is_cut_at_max_utterance_length_and_speech_going_on_starts_the_next():
    options = TurnDetectionOptions(min_speech_ms=32, max_utterance_s=1.0, smart_turn=False)
    detector = TurnDetector(options, smart_turn_available=False)
    signals = feed(detector, [0.9] * 40)
    assert kinds(signals) == ["Onset", "SpeechConfirmed", "TurnEnded", "Onset", "SpeechConfirmed"]
    frame, ended = signals[2]
    assert ended.reason == "max_length" and 16000 <= ended.end_sample - ended.start_sample < 16000 + FRAME_SAMPLES
    assert signals[3][0] == frame + 1 and not any(isinstance(s, OnsetLost) for _, s in signals)


def test_a_pause_is_still_in_speech_but_not_voiced_so_no_partial_transcript_is_started_there():
    detector = TurnDetector(TurnDetectionOptions(min_speech_ms=64), smart_turn_available=True)
    feed(detector, [0.9] * 10)
    assert detector.in_speech and detector.voiced
    feed(detector, [0.0] * 2, start_frame=10)  # the pause the speculative transcript covers
    assert detector.in_speech and not detector.voiced
    feed(detector, [0.9] * 3, start_frame=12)
    assert detector.voiced
