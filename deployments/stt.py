"""Speech to text: faster-whisper, batched across sessions.

Concurrent ``transcribe`` calls (one utterance each, usually from different sessions) are merged
by ``@serve.batch`` and decoded in one CTranslate2 ``generate`` over a stacked feature batch
(faster-whisper's batched pipeline), which is what makes a GPU replica pay off.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field
from ray import serve

from deployments.audio import as_float32_mono
from deployments.embedded import whisper_tiny_en_dir
from deployments.errors import ModelInputError

SAMPLE_RATE = 16000
CHUNK_SECONDS = 30  # Whisper's window; one utterance up to this long is one batch row
SHORT_WINDOW_MARGIN_S = 2  # an utterance closer than this to the short window's end gets the full window
EMBEDDED_MODEL = "tiny.en"


class SttOptions(BaseModel):
    model: str = Field(
        EMBEDDED_MODEL,
        description="'tiny.en' = the embedded model; any faster-whisper size name (e.g. large-v3, fetched by "
        "faster-whisper when the host is online), a Hugging Face repo id, or a local CTranslate2 directory",
    )
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    device_index: int = 0
    compute_type: str = Field("int8", description="CTranslate2 compute type: int8, int8_float16, float16, ...")
    cpu_threads: int = Field(2, ge=0)
    local_files_only: bool = Field(True, description="never reach a model hub at run time")
    language: str | None = Field("en", description="None = detect (multilingual models only)")
    beam_size: int = Field(1, ge=1)
    word_timestamps: bool = True
    no_speech_threshold: float = Field(0.6, description="with log_prob_threshold: Whisper's silence rule")
    log_prob_threshold: float = -1.0
    short_window_s: int = Field(
        16, ge=0, le=CHUNK_SECONDS,
        description="decode an utterance of up to this minus 2 s in a window this long instead of Whisper's 30 s "
        "(the encoder's time follows the window, not the speech), and again in 30 s if the result is unsure; "
        "0 = always 30 s")
    short_window_recheck_no_speech: float = Field(
        0.45, ge=0, le=1, description="a short-window result with a segment's no_speech_prob over this (or "
        "avg_logprob under log_prob_threshold) is decoded again in the 30 s window")
    max_audio_s: float = Field(120.0, gt=0, description="longest utterance accepted")
    max_batch_size: int = Field(8, ge=1)
    batch_wait_timeout_s: float = Field(0.01, ge=0)


class WordTiming(BaseModel):
    word: str
    start: float
    end: float
    probability: float


class Transcription(BaseModel):
    text: str
    words: list[WordTiming] = []
    language: str
    duration_s: float
    no_speech_prob: float = 0.0
    avg_logprob: float = 0.0
    hallucination_suspected: bool = Field(
        False, description="Whisper's silence rule fired (or only punctuation came out): text was blanked"
    )


_ONLY_PUNCTUATION = re.compile(r"^[\W_]*$")


def resolve_model(name: str) -> str:
    """The path or name faster-whisper should load; rejects names it could never resolve."""
    from faster_whisper.utils import available_models

    if name == EMBEDDED_MODEL:
        return str(whisper_tiny_en_dir())
    if os.path.isdir(name) or name in available_models() or re.fullmatch(r"[\w.-]+/[\w.-]+", name):
        return name
    raise ModelInputError(
        f"unknown speech model {name!r}: use a faster-whisper size name, a repo id or a local directory",
        "unknown_model",
    )


class WhisperTranscriber:
    """faster-whisper model plus the batched pipeline used to decode many utterances at once."""

    def __init__(self, options: SttOptions) -> None:
        from faster_whisper import BatchedInferencePipeline, WhisperModel

        self.options = options
        self.model = WhisperModel(
            resolve_model(options.model),
            device=options.device,
            device_index=options.device_index,
            compute_type=options.compute_type,
            cpu_threads=options.cpu_threads,
            local_files_only=options.local_files_only,
        )
        self.pipeline = BatchedInferencePipeline(self.model)

    def validate(self, audio: np.ndarray | bytes) -> np.ndarray:
        samples = as_float32_mono(audio, what="speech audio")
        if samples.size > self.options.max_audio_s * SAMPLE_RATE:
            raise ModelInputError(
                f"utterance of {samples.size / SAMPLE_RATE:.1f} s is longer than the {self.options.max_audio_s:.0f} s limit",
                "audio_too_long",
            )
        return samples

    def _transcription_options(self):
        from faster_whisper.transcribe import TranscriptionOptions

        return TranscriptionOptions(
            beam_size=self.options.beam_size, best_of=1, patience=1.0, length_penalty=1.0,
            repetition_penalty=1.0, no_repeat_ngram_size=0, log_prob_threshold=self.options.log_prob_threshold,
            no_speech_threshold=self.options.no_speech_threshold, compression_ratio_threshold=2.4,
            condition_on_previous_text=False, prompt_reset_on_temperature=0.5, temperatures=[0.0],
            initial_prompt=None, prefix=None, suppress_blank=True, suppress_tokens=[-1],
            without_timestamps=True, max_initial_timestamp=0.0, word_timestamps=self.options.word_timestamps,
            prepend_punctuations="\"'“¿([{-", append_punctuations="\"'.。,，!！?？:：”)]}、",
            multilingual=False, max_new_tokens=None, clip_timestamps="0", hallucination_silence_threshold=None,
            hotwords=None,
        )

    def _tokenizer(self, language: str):
        from faster_whisper.tokenizer import Tokenizer

        return Tokenizer(self.model.hf_tokenizer, self.model.model.is_multilingual, task="transcribe",
                         language=language)

    def _language(self, features: np.ndarray) -> str:
        if not self.model.model.is_multilingual:
            return "en"
        if self.options.language:
            return self.options.language
        language, _, _ = self.model.detect_language(features=features)
        return language

    def transcribe_batch(self, utterances: list[np.ndarray | bytes]) -> list[Transcription]:
        """Decode utterances of up to 30 s in one model batch; longer ones use Whisper's long-form decoding.

        Whisper's encoder always reads a 30 s window, however short the speech, and on CPU that is
        ~90 % of a short utterance's time (tiny.en int8, 2 threads: 324-416 ms of 355-457 ms on four
        clips). An utterance that fits ``short_window_s`` (less a 2 s margin) is decoded in that
        shorter window first, but a 16 s window alone made three of the non-speech clips say
        something ("The End" over music); those results are unsure by Whisper's own measures
        (no_speech_prob near 0.6), so a short-window result with a segment over
        ``short_window_recheck_no_speech`` or under ``log_prob_threshold`` is decoded again in 30 s.
        ``bench/stt_window.py`` (39 English clips of ``shared/speech``, idle box): corpus WER 0.075
        against 0.077 in 30 s, P50 194 ms against 429 ms a clip, 2 clips decoded twice, and no text
        from the 6 non-speech clips cut to 1-30 s. A 10 s window made tiny.en miss speech (WER 0.25).
        """
        audios = [self.validate(u) for u in utterances]
        results: dict[int, Transcription] = {i: self._transcribe_long(a) for i, a in enumerate(audios)
                                             if a.size > CHUNK_SECONDS * SAMPLE_RATE}
        short_window = self.options.short_window_s
        fits = [i for i, a in enumerate(audios) if i not in results and 0 < short_window < CHUNK_SECONDS
                and a.size <= (short_window - SHORT_WINDOW_MARGIN_S) * SAMPLE_RATE]
        full = [i for i in range(len(audios)) if i not in results and i not in fits]
        if fits:
            decoded, language = self._decode([audios[i] for i in fits], short_window)
            for i, segments in zip(fits, decoded):
                if self._unsure(segments):
                    full.append(i)
                else:
                    results[i] = self._to_transcription(segments, audios[i].size / SAMPLE_RATE, language)
        if full:
            decoded, language = self._decode([audios[i] for i in full], CHUNK_SECONDS)
            for i, segments in zip(full, decoded):
                results[i] = self._to_transcription(segments, audios[i].size / SAMPLE_RATE, language)
        return [results[i] for i in range(len(audios))]

    def _decode(self, audios: list[np.ndarray], window_s: int) -> tuple[list[list[dict]], str]:
        """One batched decode of utterances that fit ``window_s``: each one's segments, and the language."""
        from faster_whisper.audio import pad_or_trim

        features = np.stack([pad_or_trim(self.model.feature_extractor(a)[..., :-1], length=window_s * 100)
                             for a in audios])
        metadata = [{"offset": 0.0, "duration": a.size / SAMPLE_RATE} for a in audios]
        language = self._language(features[0])
        self.pipeline.last_speech_timestamp = 0.0
        return self.pipeline.forward(features, self._tokenizer(language), metadata,
                                     self._transcription_options()), language

    def _unsure(self, segments: list[dict]) -> bool:
        """Whether a short-window result needs the full window: no text, or Whisper doubts it."""
        return not segments or any(
            s["no_speech_prob"] > self.options.short_window_recheck_no_speech
            or s["avg_logprob"] < self.options.log_prob_threshold for s in segments)

    def _transcribe_long(self, audio: np.ndarray) -> Transcription:
        """Over 30 s: Whisper's sequential long-form decoding, which moves its window by timestamps."""
        segments, info = self.model.transcribe(
            audio, language=self.options.language, beam_size=self.options.beam_size,
            word_timestamps=self.options.word_timestamps, condition_on_previous_text=False,
            no_speech_threshold=self.options.no_speech_threshold, log_prob_threshold=self.options.log_prob_threshold,
        )
        as_dicts = [
            {"text": s.text, "no_speech_prob": s.no_speech_prob, "avg_logprob": s.avg_logprob,
             "words": [dataclasses.asdict(w) for w in s.words or []]}
            for s in segments
        ]
        return self._to_transcription(as_dicts, audio.size / SAMPLE_RATE, info.language)

    def _to_transcription(self, segments: list[dict], duration_s: float, language: str) -> Transcription:
        text = "".join(s["text"] for s in segments).strip()
        words = [
            WordTiming(word=w["word"].strip(), start=round(w["start"], 3), end=round(w["end"], 3),
                       probability=round(w["probability"], 3))
            for s in segments
            for w in s.get("words") or []
        ]
        no_speech = max((s["no_speech_prob"] for s in segments), default=1.0)
        avg_logprob = float(np.mean([s["avg_logprob"] for s in segments])) if segments else 0.0
        silent = no_speech > self.options.no_speech_threshold and avg_logprob < self.options.log_prob_threshold
        suspected = bool(text) and (silent or bool(_ONLY_PUNCTUATION.match(text)))
        if suspected or not text:
            text, words = "", []
        return Transcription(text=text, words=words, language=language, duration_s=round(duration_s, 3),
                             no_speech_prob=round(float(no_speech), 3), avg_logprob=round(avg_logprob, 3),
                             hallucination_suspected=suspected)


@serve.deployment(name="STT", max_ongoing_requests=32)
class SpeechToText:
    """Serve face of WhisperTranscriber; concurrent requests share one batched decode."""

    def __init__(self, options: dict | SttOptions | None = None) -> None:
        self.options = SttOptions.model_validate(options or {})
        self.model = WhisperTranscriber(self.options)
        self._transcribe_batch.set_max_batch_size(self.options.max_batch_size)
        self._transcribe_batch.set_batch_wait_timeout_s(self.options.batch_wait_timeout_s)

    async def transcribe(self, pcm16k: np.ndarray | bytes) -> Transcription:
        """One utterance of 16 kHz mono audio (PCM16 bytes, int16 or float32 array)."""
        self.model.validate(pcm16k)  # bad input fails alone instead of failing its batch
        return await self._transcribe_batch(pcm16k)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def _transcribe_batch(self, utterances: list[np.ndarray | bytes]) -> list[Transcription]:
        return await asyncio.to_thread(self.model.transcribe_batch, utterances)

    async def info(self) -> dict:
        return {"model": self.options.model, "device": self.options.device, "compute_type": self.options.compute_type}
