"""Silero VAD service: speech found in speech, none in non-speech, batching changes nothing."""

from __future__ import annotations

import numpy as np
import pytest

from deployments.errors import ModelInputError
from deployments.vad import FRAME_SAMPLES, SileroVad, VadOptions, VadRequest, initial_states

MIN_SPEECH_FRAMES = 8  # 250 ms of 32 ms frames: the seed's minimum speech duration


@pytest.fixture(scope="module")
def vad() -> SileroVad:
    return SileroVad(VadOptions())


def frames_of(clip) -> np.ndarray:
    audio = clip.pcm16().astype(np.float32) / 32768.0
    count = audio.size // FRAME_SAMPLES
    return audio[: count * FRAME_SAMPLES].reshape(count, FRAME_SAMPLES)


def longest_speech_run(probabilities: np.ndarray, threshold: float = 0.5) -> int:
    best = current = 0
    for p in probabilities:
        current = current + 1 if p > threshold else 0
        best = max(best, current)
    return best


def test_speech_found_in_every_speech_clip(vad, speech_clips):
    speech = [c for c in speech_clips if c.kind == "speech"]
    assert len(speech) >= 40
    for clip in speech:
        result = vad.run(VadRequest(frames_of(clip)[None], initial_states(1)))
        assert longest_speech_run(result.probabilities[0]) >= MIN_SPEECH_FRAMES, clip.file


def test_no_speech_in_non_speech_clips(vad, speech_clips):
    nonspeech = [c for c in speech_clips if c.kind == "nonspeech"]
    assert len(nonspeech) == 6
    for clip in nonspeech:
        result = vad.run(VadRequest(frames_of(clip)[None], initial_states(1)))
        assert longest_speech_run(result.probabilities[0]) < MIN_SPEECH_FRAMES, clip.file


def test_batched_streams_equal_one_stream_at_a_time(vad, speech_clips):
    """Many streams of different lengths in one request, fed tick by tick, match solo runs."""
    clips = [c for c in speech_clips if c.kind == "speech"][:6] + [c for c in speech_clips if c.kind == "nonspeech"][:2]
    streams = [frames_of(c) for c in clips]
    solo = [vad.run(VadRequest(f[None], initial_states(1))).probabilities[0] for f in streams]

    ticks_per_call = 3  # ~100 ms of audio per stream per call, like the ingress sends
    longest = max(len(f) for f in streams)
    states = initial_states(len(streams))
    batched = [[] for _ in streams]
    for start in range(0, longest, ticks_per_call):
        frames = np.zeros((len(streams), ticks_per_call, FRAME_SAMPLES), dtype=np.float32)
        steps = np.zeros(len(streams), dtype=np.int32)
        for row, f in enumerate(streams):
            chunk = f[start : start + ticks_per_call]
            frames[row, : len(chunk)] = chunk
            steps[row] = len(chunk)
        result = vad.run(VadRequest(frames, states, steps))
        states = result.states
        for row in range(len(streams)):
            batched[row].extend(result.probabilities[row, : steps[row]])
            assert np.isnan(result.probabilities[row, steps[row] :]).all()

    for row, expected in enumerate(solo):
        np.testing.assert_allclose(np.array(batched[row]), expected, atol=1e-5, err_msg=clips[row].file)


def test_requests_merged_by_run_many_match_separate_runs(vad, speech_clips):
    a, b = frames_of(speech_clips[0])[:10], frames_of(speech_clips[1])[:4]
    merged = vad.run_many([VadRequest(a[None], initial_states(1)), VadRequest(b[None], initial_states(1))])
    alone_a = vad.run(VadRequest(a[None], initial_states(1)))
    alone_b = vad.run(VadRequest(b[None], initial_states(1)))
    np.testing.assert_allclose(merged[0].probabilities, alone_a.probabilities, atol=1e-5)
    np.testing.assert_allclose(merged[1].probabilities, alone_b.probabilities, atol=1e-5)
    np.testing.assert_allclose(merged[1].states, alone_b.states, atol=1e-5)


@pytest.mark.parametrize(
    ("frames", "states", "code"),
    [
        (np.zeros((1, 1, 480), np.float32), initial_states(1), "bad_audio"),  # 30 ms frames: wrong size
        (np.zeros((1, 1, 512), np.float64), initial_states(1), "bad_audio"),  # wrong dtype
        (np.zeros((0, 1, 512), np.float32), initial_states(0), "empty_audio"),
        (np.full((1, 1, 512), np.nan, np.float32), initial_states(1), "bad_audio"),
        (np.zeros((2, 1, 512), np.float32), initial_states(1), "bad_state"),  # one state for two streams
    ],
)
def test_bad_requests_raise_model_input_error_and_model_keeps_working(vad, frames, states, code):
    with pytest.raises(ModelInputError) as raised:
        vad.run(VadRequest(frames, states))
    assert raised.value.code == code
    ok = vad.run(VadRequest(np.zeros((1, 1, 512), np.float32), initial_states(1)))
    assert ok.probabilities.shape == (1, 1)


def test_int16_frames_are_accepted(vad, speech_clips):
    clip = next(c for c in speech_clips if c.kind == "speech")
    as_float = frames_of(clip)[:20]
    as_int16 = (as_float * 32768.0).astype(np.int16)
    np.testing.assert_allclose(
        vad.run(VadRequest(as_int16[None], initial_states(1))).probabilities,
        vad.run(VadRequest(as_float[None], initial_states(1))).probabilities,
        atol=1e-4,
    )
