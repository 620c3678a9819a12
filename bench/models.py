"""Per-model figures on this machine (not a test): run `make bench` or `.venv/bin/python bench/models.py`.

Calls the model code in-process (the deployments' own classes), so the numbers are model cost
without the Ray hop (~3 ms per handle call, see shared/notes/ray_serve.md).
"""

from __future__ import annotations

import asyncio
import io
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deployments.llm import ChatRequest, LanguageModel, LlmOptions, TextDelta
from deployments.stt import SttOptions, WhisperTranscriber
from deployments.tts import SynthesisRequest, TextToSpeech, TtsOptions
from deployments.vad import FRAME_SAMPLES, SileroVad, VadOptions, VadRequest, initial_states
from deployments.vision import ImageDescriber, VisionOptions
from tests.conftest import load_manifest


def timed(fn, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def bench_vad() -> None:
    vad = SileroVad(VadOptions())
    rng = np.random.default_rng(0)
    print("VAD (silero ONNX, 1 thread), one 32 ms frame per stream per call:")
    for streams in (1, 10, 100):
        frames = (rng.standard_normal((streams, 1, FRAME_SAMPLES)) * 0.1).astype(np.float32)
        states = initial_states(streams)
        times = timed(lambda f=frames, s=states: vad.run(VadRequest(f, s)), 200 if streams < 100 else 50)
        per_stream_ms = statistics.median(times) * 1000 / streams
        print(f"  batch {streams:3d}: {statistics.median(times) * 1000:6.2f} ms per call, "
              f"{per_stream_ms:.3f} ms per stream-frame")


def bench_stt(clips) -> None:
    stt = WhisperTranscriber(SttOptions())
    english = [c for c in clips if c.kind == "speech" and c.language == "en"][:12]
    stt.transcribe_batch([english[0].pcm16()])  # warm-up
    seconds, audio_s = [], []
    for clip in english:
        start = time.perf_counter()
        stt.transcribe_batch([clip.pcm16()])
        seconds.append(time.perf_counter() - start)
        audio_s.append(clip.duration_s)
    rtf = sum(seconds) / sum(audio_s)
    print(f"STT (faster-whisper tiny.en int8, {len(english)} utterances of {min(audio_s):.1f}-{max(audio_s):.1f} s):")
    print(f"  one at a time: median {statistics.median(seconds):.2f} s per utterance, "
          f"p95 {sorted(seconds)[int(0.95 * (len(seconds) - 1))]:.2f} s, RTF {rtf:.3f}")
    for batch in (4, 8):
        start = time.perf_counter()
        stt.transcribe_batch([c.pcm16() for c in english[:batch]])
        took = time.perf_counter() - start
        print(f"  batch of {batch}: {took:.2f} s ({took / batch:.2f} s per utterance)")


async def bench_llm() -> None:
    llm = LanguageModel.func_or_class(LlmOptions())
    topics = ["the moon", "the ocean", "volcanoes", "honey bees", "the Roman empire"]
    ttfts, rates = [], []
    for topic in topics:  # a new prompt each run: no prefix-cache hit flatters the first token
        prompt = {"messages": [{"role": "user", "content": f"Tell me about {topic} in three sentences."}],
                  "max_tokens": 96, "temperature": 0.0}
        start = time.perf_counter()
        first, tokens = None, 0
        async for event in llm.chat(ChatRequest.model_validate(prompt)):
            if isinstance(event, TextDelta):
                first = first or time.perf_counter()
            if getattr(event, "type", "") == "done":
                tokens = event.completion_tokens
        end = time.perf_counter()
        ttfts.append(first - start)
        rates.append(tokens / (end - first) if end > first else float("nan"))
    print("LLM (SmolLM2-135M-Instruct Q4_1, llama.cpp, 5 prompts, up to 96 tokens each):")
    print(f"  time to first token median {statistics.median(ttfts) * 1000:.0f} ms, "
          f"{statistics.median(rates):.0f} tokens/s")


async def bench_tts() -> None:
    tts = TextToSpeech.func_or_class(TtsOptions())
    sentence = "The quick brown fox jumps over the lazy dog, and then it runs into the forest."
    firsts, rtfs = [], []
    for _ in range(5):
        start = time.perf_counter()
        first, samples = None, 0
        async for chunk in tts.synthesize(SynthesisRequest(text=sentence, sample_rate=24000)):
            first = first or time.perf_counter()
            samples += len(chunk) // 2
        took = time.perf_counter() - start
        firsts.append(first - start)
        rtfs.append(took / (samples / 24000))
    print("TTS (Piper en_US joe medium, one 16-word sentence, 24 kHz out):")
    print(f"  first chunk median {statistics.median(firsts) * 1000:.0f} ms, RTF {statistics.median(rtfs):.3f}")


async def bench_ocr() -> None:
    from PIL import Image, ImageDraw, ImageFont

    vision = ImageDescriber.func_or_class(VisionOptions())
    image = Image.new("RGB", (1280, 720), "white")
    draw = ImageDraw.Draw(image)
    for row in range(6):
        draw.text((40, 40 + row * 110), f"Line {row + 1}: the quick brown fox", fill="black",
                  font=ImageFont.load_default(size=56))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    data = buffer.getvalue()
    await vision.describe(data, None)
    times = []
    for _ in range(5):
        start = time.perf_counter()
        await vision.describe(data, None)
        times.append(time.perf_counter() - start)
    print(f"Vision (rapidocr PP-OCRv6 + image facts, 1280x720, 6 text lines): "
          f"median {statistics.median(times):.2f} s per image")


def main() -> None:
    clips = load_manifest()
    bench_vad()
    bench_stt(clips)
    asyncio.run(bench_llm())
    asyncio.run(bench_tts())
    asyncio.run(bench_ocr())


if __name__ == "__main__":
    main()
