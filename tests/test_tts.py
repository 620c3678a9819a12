"""TTS service: real Piper voice; Parler-TTS on a tiny random model where parler-tts is installed."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from deployments.errors import ModelInputError
from deployments.tts import MAX_TEXT_CHARS, TextToSpeech

LONG_SENTENCE = (
    "The quick brown fox jumps over the lazy dog while the farmer walks slowly back to the old red barn."
)
TWO_SENTENCES = (
    "Good morning, and thank you for calling the city library help desk today. "
    "Please tell me the title of the book you would like to borrow this week."
)
RMS_FLOOR = 0.01


@pytest.fixture(scope="module")
def piper_tts():
    return TextToSpeech.func_or_class()


async def collect(tts, request) -> list[bytes]:
    return [chunk async for chunk in tts.synthesize(request)]


def as_float(chunks: list[bytes]) -> np.ndarray:
    return np.frombuffer(b"".join(chunks), dtype="<i2").astype(np.float32) / 32768.0


def rms(audio: np.ndarray) -> float:
    return float(np.sqrt(np.mean(audio**2)))


def synthesis_threads_alive() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name in ("tts-synthesis", "parler-generate")]


async def test_info_reports_piper_native_rate_and_default_voice(piper_tts):
    info = await piper_tts.info()
    assert info["backend"] == "piper"
    assert info["sample_rate"] == 22050
    assert info["voices"] == ["default"]


async def test_piper_streams_equal_pcm16_chunks_of_plausible_length(piper_tts):
    chunks = await collect(piper_tts, {"text": LONG_SENTENCE, "sample_rate": 24000})

    assert len(chunks) >= 5
    assert all(len(chunk) % 2 == 0 for chunk in chunks)
    assert {len(chunk) for chunk in chunks[:-1]} == {24000 * 150 // 1000 * 2}
    assert 0 < len(chunks[-1]) <= 24000 * 150 // 1000 * 2
    seconds_per_word = len(as_float(chunks)) / 24000 / len(LONG_SENTENCE.split())
    assert 0.15 <= seconds_per_word <= 1.0
    assert rms(as_float(chunks[:1])) > RMS_FLOOR
    assert rms(as_float(chunks)) > RMS_FLOOR


async def test_output_length_scales_with_requested_sample_rate(piper_tts):
    at_24k = as_float(await collect(piper_tts, {"text": LONG_SENTENCE, "sample_rate": 24000}))
    at_16k = as_float(await collect(piper_tts, {"text": LONG_SENTENCE, "sample_rate": 16000}))

    # Piper samples its phoneme durations, so the same text differs by a percent or two between runs.
    assert len(at_16k) / len(at_24k) == pytest.approx(16000 / 24000, rel=0.06)
    assert rms(at_16k) > RMS_FLOOR


async def test_first_chunk_arrives_before_the_second_sentence_is_synthesised(piper_tts):
    started = time.monotonic()
    arrivals = [time.monotonic() - started async for _ in piper_tts.synthesize({"text": TWO_SENTENCES})]

    assert len(arrivals) > 10
    assert arrivals[0] < 0.75 * arrivals[-1]


@pytest.fixture
def sentences_synthesised(piper_tts, monkeypatch) -> list[int]:
    """Counts the sentences Piper actually synthesised, to show that closing a stream stops it."""
    produced: list[int] = []
    stream = piper_tts.backend.stream

    def counting_stream(text, voice, stop):
        for audio in stream(text, voice, stop):
            produced.append(len(audio))
            yield audio

    monkeypatch.setattr(piper_tts.backend, "stream", counting_stream)
    return produced


async def test_closing_the_stream_midway_stops_synthesis_and_the_next_call_works(
    piper_tts, sentences_synthesised
):
    stream = piper_tts.synthesize({"text": TWO_SENTENCES * 3})
    first = await anext(stream)
    await stream.aclose()

    assert len(first) > 0
    assert synthesis_threads_alive() == []
    assert 1 <= len(sentences_synthesised) <= 3  # of six
    assert len(await collect(piper_tts, {"text": "Still here."})) > 0


async def test_cancelling_the_consumer_task_stops_synthesis(piper_tts, sentences_synthesised):
    got_first = asyncio.Event()

    async def listen() -> None:
        async for _ in piper_tts.synthesize({"text": TWO_SENTENCES * 3}):
            got_first.set()

    task = asyncio.create_task(listen())
    await got_first.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert synthesis_threads_alive() == []
    assert 1 <= len(sentences_synthesised) <= 3  # of six
    assert len(await collect(piper_tts, {"text": "Still here."})) > 0


async def test_punctuation_only_text_yields_no_audio(piper_tts):
    assert await collect(piper_tts, {"text": "..."}) == []


@pytest.mark.parametrize(
    ("request_", "code"),
    [
        ({"text": ""}, "empty_text"),
        ({"text": " \n\t "}, "empty_text"),
        ({"text": "a" * (MAX_TEXT_CHARS + 1)}, "text_too_long"),
        ({"text": "Hello.", "sample_rate": 7999}, "bad_sample_rate"),
        ({"text": "Hello.", "sample_rate": 48001}, "bad_sample_rate"),
        ({"text": "Hello.", "voice": "alice"}, "unknown_voice"),
        ({"text": ["not", "text"]}, "bad_request"),
        ({"sample_rate": 16000}, "bad_request"),
    ],
)
async def test_bad_request_is_refused_and_the_instance_keeps_working(piper_tts, request_, code):
    with pytest.raises(ModelInputError) as refused:
        await collect(piper_tts, request_)

    assert refused.value.code == code
    assert refused.value.message
    assert synthesis_threads_alive() == []
    assert len(await collect(piper_tts, {"text": "Hello again.", "voice": "default"})) > 0


# --- Parler-TTS: a tiny randomly initialised model (noise), saved and loaded through the backend ---


def build_tiny_parler(directory) -> None:
    from parler_tts import (
        DACConfig,
        ParlerTTSConfig,
        ParlerTTSDecoderConfig,
        ParlerTTSForConditionalGeneration,
    )
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, T5Config

    words = [
        "a",
        "male",
        "female",
        "speaker",
        "voice",
        "clear",
        "slow",
        "fast",
        "hello",
        "there",
        "this",
        "is",
        "only",
        "noise",
    ]
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2} | {word: i + 3 for i, word in enumerate(words)}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    ).save_pretrained(directory)

    codebook_size, num_codebooks = 16, 2
    config = ParlerTTSConfig.from_sub_models_config(
        T5Config(vocab_size=32, d_model=16, d_kv=4, d_ff=32, num_layers=1, num_heads=2),
        DACConfig(num_codebooks=num_codebooks, latent_dim=8, codebook_size=codebook_size),
        ParlerTTSDecoderConfig(
            vocab_size=codebook_size + 2,  # codes, then eos/pad and bos: nothing the codec cannot decode
            max_position_embeddings=256,
            num_hidden_layers=1,
            ffn_dim=32,
            num_attention_heads=2,
            hidden_size=16,
            num_codebooks=num_codebooks,
            pad_token_id=codebook_size,
            eos_token_id=codebook_size,
            bos_token_id=codebook_size + 1,
        ),
        vocab_size=32,
        pad_token_id=codebook_size,
        decoder_start_token_id=codebook_size + 1,
    )
    model = ParlerTTSForConditionalGeneration(config)
    # A random decoder samples its end token early and at random; this one speaks until max_audio_s.
    model.generation_config.min_new_tokens = 10_000
    model.save_pretrained(directory)


@pytest.fixture(scope="module")
def parler_tts(tmp_path_factory):
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    model_dir = tmp_path_factory.mktemp("tiny-parler")
    build_tiny_parler(model_dir)
    options = {
        "backend": "parler",
        "model_path": str(model_dir),
        "device": "cpu",
        "play_steps_s": 0.15,
        "max_audio_s": 0.6,
    }
    return TextToSpeech.func_or_class(options)


@pytest.mark.parler
async def test_parler_streams_pcm16_chunks_at_the_requested_rate(parler_tts):
    info = await parler_tts.info()
    chunks = await collect(
        parler_tts, {"text": "hello there", "voice": "a female speaker", "sample_rate": 24000}
    )

    assert info["backend"] == "parler"
    assert info["sample_rate"] == 44100
    assert len(chunks) >= 2
    assert all(len(chunk) % 2 == 0 for chunk in chunks)
    assert {len(chunk) for chunk in chunks[:-1]} == {24000 * 150 // 1000 * 2}
    assert 0.4 * 24000 <= len(as_float(chunks)) <= 0.7 * 24000  # max_audio_s=0.6, resampled from 44.1 kHz
    assert np.abs(as_float(chunks)).max() > 0


@pytest.mark.parler
async def test_parler_generation_thread_stops_when_the_consumer_leaves(parler_tts):
    stream = parler_tts.synthesize({"text": "this is only noise", "sample_rate": 16000})
    first = await anext(stream)
    await stream.aclose()

    assert len(first) == 16000 * 150 // 1000 * 2
    assert synthesis_threads_alive() == []
    with pytest.raises(ModelInputError) as refused:
        await collect(parler_tts, {"text": "hello", "voice": "x" * 1001})
    assert refused.value.code == "voice_too_long"
