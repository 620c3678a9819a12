"""Text-to-speech service: one sentence in, a stream of PCM16 chunks out.

The backend (Piper on CPU by default, Parler-TTS on a GPU) runs in a worker thread and hands
float32 audio at its native rate to the replica's loop, which resamples it to the rate the caller
asked for and cuts it into short chunks, so the first chunk leaves as soon as the model has any
audio and a cancelled request stops the model between pieces.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Generator
from contextlib import closing
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import soxr
from pydantic import BaseModel, Field, ValidationError, model_validator
from ray import serve

from deployments.audio import float_to_pcm16
from deployments.errors import ModelInputError

MAX_TEXT_CHARS = 2000
MIN_SAMPLE_RATE = 8000
MAX_SAMPLE_RATE = 48000


class TtsOptions(BaseModel):
    """How the TTS replica is built; the defaults give the embedded Piper voice on CPU."""

    backend: Literal["piper", "parler"] = Field("piper", description="Which synthesis model to run.")
    chunk_ms: int = Field(150, ge=20, le=1000, description="Length of each streamed PCM chunk.")
    # Piper
    voice_path: Path | None = Field(
        None, description="Piper .onnx voice; default: embedded en_US joe medium."
    )
    config_path: Path | None = Field(
        None, description="Piper voice .json; default: the voice path + '.json'."
    )
    length_scale: float | None = Field(
        None, gt=0, description="Piper speaking pace (>1 slower, <1 faster); default: the voice's own."
    )
    noise_scale: float | None = Field(
        None,
        ge=0,
        le=2,
        description="Piper generator noise (0 = the same waveform every time); default: the voice's own.",
    )
    noise_w_scale: float | None = Field(
        None,
        ge=0,
        le=2,
        description="Piper phoneme-length noise (0 = the same timing every time); default: the voice's own.",
    )
    use_cuda: bool = Field(False, description="Run the Piper ONNX model on CUDA.")
    # Parler-TTS
    model_path: Path | None = Field(
        None, description="Local Parler-TTS model directory (required for parler)."
    )
    device: str = Field("cuda", description="Torch device for Parler-TTS: 'cuda', 'cuda:1' or 'cpu'.")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "auto", description="Parler weights dtype; auto = bfloat16 on CUDA, float32 on CPU."
    )
    description: str = Field(
        "A male speaker delivers his words clearly at a moderate pace, with a very close recording "
        "that has no background noise.",
        description="Parler speaker description used when a request names no voice.",
    )
    play_steps_s: float = Field(
        0.5, gt=0, le=5, description="Parler streaming granularity: seconds of audio decoded per step."
    )
    max_audio_s: float = Field(
        30.0, gt=0, le=120, description="Parler stops generating after this much audio."
    )

    @model_validator(mode="after")
    def _parler_needs_model(self) -> TtsOptions:
        if self.backend == "parler" and self.model_path is None:
            raise ValueError("backend 'parler' needs model_path (a local Parler-TTS model directory)")
        return self


class SynthesisRequest(BaseModel):
    """One sentence to speak."""

    text: str = Field(description=f"The sentence; 1..{MAX_TEXT_CHARS} characters, not only whitespace.")
    sample_rate: int = Field(24000, description=f"Output rate in Hz, {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE}.")
    voice: str | None = Field(
        None, description="Piper: speaker name or id of a multi-speaker voice. Parler: a speaker description."
    )


class SpeechBackend(Protocol):
    """What the deployment needs from a synthesis model."""

    name: str
    sample_rate: int

    def info(self) -> dict[str, Any]: ...

    def resolve_voice(self, voice: str | None) -> Any:
        """Turn a request's voice into what ``stream`` takes; raise ModelInputError if unknown."""

    def stream(self, text: str, voice: Any, stop: threading.Event) -> Generator[np.ndarray, None, None]:
        """Yield float32 mono pieces at ``sample_rate``; blocking; return soon after ``stop`` is set."""


def build_backend(options: TtsOptions) -> SpeechBackend:
    if options.backend == "parler":
        from deployments.tts_parler import ParlerBackend

        return ParlerBackend(
            options.model_path,
            device=options.device,
            dtype=options.dtype,
            description=options.description,
            play_steps_s=options.play_steps_s,
            max_audio_s=options.max_audio_s,
        )
    from deployments.tts_piper import PiperBackend

    return PiperBackend(
        options.voice_path,
        options.config_path,
        length_scale=options.length_scale,
        noise_scale=options.noise_scale,
        noise_w_scale=options.noise_w_scale,
        use_cuda=options.use_cuda,
    )


def parse_request(request: SynthesisRequest | dict) -> SynthesisRequest:
    try:
        request = SynthesisRequest.model_validate(request)
    except ValidationError as exc:
        raise ModelInputError(f"bad synthesis request: {exc.errors()[0]['msg']}", "bad_request") from None
    if not request.text.strip():
        raise ModelInputError("text is empty; nothing to speak", "empty_text")
    if len(request.text) > MAX_TEXT_CHARS:
        raise ModelInputError(
            f"text has {len(request.text)} characters; send at most {MAX_TEXT_CHARS} (one sentence)",
            "text_too_long",
        )
    if not MIN_SAMPLE_RATE <= request.sample_rate <= MAX_SAMPLE_RATE:
        raise ModelInputError(
            f"sample_rate {request.sample_rate} Hz is outside {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE}",
            "bad_sample_rate",
        )
    return request


class PcmChunker:
    """Resamples a stream of float32 pieces and cuts it into equal PCM16 chunks (the last may be short)."""

    def __init__(self, in_rate: int, out_rate: int, chunk_ms: int) -> None:
        # One resampler for the whole stream keeps the filter state across pieces: no clicks at joins.
        self._resampler = None if in_rate == out_rate else soxr.ResampleStream(in_rate, out_rate, 1)
        self._chunk_samples = max(1, out_rate * chunk_ms // 1000)
        self._pending = np.zeros(0, dtype=np.float32)

    def push(self, audio: np.ndarray) -> list[bytes]:
        return self._cut(self._resample(audio, last=False), final=False)

    def flush(self) -> list[bytes]:
        return self._cut(self._resample(np.zeros(0, dtype=np.float32), last=True), final=True)

    def _resample(self, audio: np.ndarray, *, last: bool) -> np.ndarray:
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        return audio if self._resampler is None else self._resampler.resample_chunk(audio, last=last)

    def _cut(self, audio: np.ndarray, *, final: bool) -> list[bytes]:
        pending = np.concatenate([self._pending, audio]) if self._pending.size else audio
        size = self._chunk_samples
        whole = len(pending) if final else len(pending) // size * size
        self._pending = pending[whole:]
        return [float_to_pcm16(pending[start : start + size]) for start in range(0, whole, size)]


_DONE = object()


class SynthesisWorker:
    """Runs a blocking audio iterator in its own thread and hands each piece to the event loop."""

    def __init__(self, produce: Callable[[threading.Event], Generator[np.ndarray, None, None]]) -> None:
        self.stop = threading.Event()
        self._produce = produce
        self._loop = asyncio.get_running_loop()
        self._pieces: asyncio.Queue[Any] = asyncio.Queue()
        self._thread = threading.Thread(target=self._run, name="tts-synthesis", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            # Closing the backend's generator here, in its own thread, lets it stop and join its model.
            with closing(self._produce(self.stop)) as pieces:
                for audio in pieces:
                    if self.stop.is_set():
                        break
                    self._hand_over(audio)
        except Exception as exc:  # noqa: BLE001 - re-raised on the consumer's side
            self._hand_over(exc)
        finally:
            self._hand_over(_DONE)

    def _hand_over(self, item: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(self._pieces.put_nowait, item)
        except RuntimeError:  # the loop has closed: nobody is listening any more
            pass

    async def pieces(self) -> AsyncIterator[np.ndarray]:
        while (item := await self._pieces.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            yield item

    async def close(self) -> None:
        """Ask the model to stop and wait until its thread has ended."""
        self.stop.set()
        await asyncio.to_thread(self._thread.join)


@serve.deployment(name="TTS")
class TextToSpeech:
    """Streams speech for one sentence at a time as PCM16 LE mono chunks."""

    def __init__(self, options: dict | None = None) -> None:
        self._options = TtsOptions.model_validate(options or {})
        self.backend = build_backend(self._options)  # the loaded model, for info and tests

    async def synthesize(self, request: SynthesisRequest | dict) -> AsyncIterator[bytes]:
        """Yield PCM16 chunks of ``chunk_ms`` at ``request.sample_rate``; text with nothing to say yields none."""
        request = parse_request(request)
        voice = self.backend.resolve_voice(request.voice)
        chunker = PcmChunker(self.backend.sample_rate, request.sample_rate, self._options.chunk_ms)
        worker = SynthesisWorker(lambda stop: self.backend.stream(request.text, voice, stop))
        try:
            async for audio in worker.pieces():
                for chunk in chunker.push(audio):
                    yield chunk
                    await asyncio.sleep(0)
            for chunk in chunker.flush():
                yield chunk
        finally:
            await worker.close()

    async def info(self) -> dict[str, Any]:
        """Backend name, native sample rate and the voices a request may name."""
        return {
            "backend": self.backend.name,
            "sample_rate": self.backend.sample_rate,
            "chunk_ms": self._options.chunk_ms,
            **self.backend.info(),
        }
