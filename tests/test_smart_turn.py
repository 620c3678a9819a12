"""Smart Turn v3.2 on real speech: finished sentences score high, sentences cut mid-way score low."""

from __future__ import annotations

import numpy as np
import pytest

from deployments.turn_end import WINDOW_SAMPLES, SmartTurnModel

FINISHED_COMMANDS = [
    # beside each: the probability this module measured for the whole clip
    "cmuarctic_a0024.wav",  # 0.720
    "voice2json_what_time_is_it.wav",  # 0.977
    "rhasspy3_whats_the_date_today.wav",  # 0.987
    "voice2json_turn_on_living_room_lamp.wav",  # 0.988
]
CUT_MID_SENTENCE = [  # beside each: the probability measured for the first half
    "cmuarctic_a0024.wav",  # 0.009
    "rhasspy3_whats_the_date_today.wav",  # 0.028
    "voice2json_turn_on_living_room_lamp.wav",  # 0.140
]


@pytest.fixture(scope="module")
def model() -> SmartTurnModel:
    return SmartTurnModel()


def test_finished_sentence_scores_high_and_its_first_half_low(model, clip_by_name):
    audio = clip_by_name("librispeech_1089-134691-0000.wav").pcm16()  # "HE COULD WAIT NO LONGER"
    assert model.completion_probability(audio) > 0.8  # measured 0.933
    assert model.completion_probability(audio[: len(audio) // 2]) < 0.2  # measured 0.015


@pytest.mark.parametrize("name", FINISHED_COMMANDS)
def test_finished_commands_are_complete(model, clip_by_name, name):
    assert model.completion_probability(clip_by_name(name).pcm16()) > 0.5


@pytest.mark.parametrize("name", CUT_MID_SENTENCE)
def test_sentences_cut_mid_way_are_incomplete(model, clip_by_name, name):
    audio = clip_by_name(name).pcm16()
    assert model.completion_probability(audio[: len(audio) // 2]) < 0.5


def test_batched_rows_equal_single_calls(model, clip_by_name):
    names = ["librispeech_1089-134691-0000.wav", "jfk_inaugural_ask_not.wav", "voice2json_what_time_is_it.wav"]
    audios = [clip_by_name(name).pcm16() for name in names]
    audios.append(audios[0][:16000])
    batched = model.completion_probabilities(audios)
    single = [model.completion_probability(audio) for audio in audios]
    assert len(batched) == 4
    np.testing.assert_allclose(batched, single, atol=1e-4)
    assert model.completion_probabilities([]) == []


def test_int16_and_float32_input_agree(model, clip_by_name):
    pcm = clip_by_name("voice2json_what_time_is_it.wav").pcm16()
    as_float = pcm.astype(np.float32) / 32768.0
    assert model.completion_probability(pcm) == pytest.approx(model.completion_probability(as_float), abs=1e-5)


def test_only_the_last_eight_seconds_count(model, clip_by_name):
    audio = clip_by_name("jfk_inaugural_ask_not.wav").pcm16()
    assert len(audio) > WINDOW_SAMPLES
    assert model.completion_probability(audio) == pytest.approx(
        model.completion_probability(audio[-WINDOW_SAMPLES:]), abs=1e-6)
    noisy_start = np.concatenate([np.full(3 * 16000, 20000, np.int16), audio])
    assert model.completion_probability(noisy_start) == pytest.approx(model.completion_probability(audio), abs=1e-6)


def test_bad_audio_is_refused(model):
    with pytest.raises(ValueError, match="mono"):
        model.completion_probability(np.zeros((16000, 2), np.float32))
    with pytest.raises(ValueError, match="float32 or int16"):
        model.completion_probability(np.zeros(16000, np.int32))


def test_missing_model_file_says_how_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="scripts/fetch_models.sh"):
        SmartTurnModel(tmp_path / "nowhere.onnx")
