"""Speech the TTS service makes is heard back as the same words by the STT service."""

from __future__ import annotations

import jiwer
import numpy as np
import pytest

from deployments.stt import SttOptions, WhisperTranscriber
from deployments.tts import SynthesisRequest, TextToSpeech, TtsOptions
from tests.text_normalise import normalise

SENTENCES = [
    "The weather today is sunny with a light breeze.",
    "Please turn off the kitchen lights at nine o'clock.",
    "My favourite book is about a ship lost at sea.",
    "Twelve times seven is eighty four.",
]


@pytest.fixture(scope="module")
def tts():
    return TextToSpeech.func_or_class(TtsOptions())


@pytest.fixture(scope="module")
def stt():
    return WhisperTranscriber(SttOptions())


# Measured: 3 of 4 sentences come back word for word; tiny.en hears "a light breeze" as "the light
# breeze" (1 substitution in 36 words, WER 0.028).
MAX_WER = 0.05
MIN_EXACT = 3


async def test_synthesised_sentences_transcribe_back_to_the_same_words(tts, stt):
    audios = []
    for sentence in SENTENCES:
        chunks = [c async for c in tts.synthesize(SynthesisRequest(text=sentence, sample_rate=16000))]
        audios.append(np.frombuffer(b"".join(chunks), dtype="<i2"))
    heard = [normalise(r.text).replace("favorite", "favourite") for r in stt.transcribe_batch(audios)]
    expected = [normalise(s) for s in SENTENCES]
    print(list(zip(expected, heard)))
    assert jiwer.wer(expected, heard) <= MAX_WER
    assert sum(h == e for h, e in zip(heard, expected)) >= MIN_EXACT
