"""The real graph: `configs/local.yaml` deployed on a 2-CPU Ray instance, called through handles
and through a real WebSocket on the Serve proxy."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import wave

import httpx
import numpy as np
import pytest
from ray import serve
from websockets.sync.client import connect

from deployments.errors import ModelInputError
from deployments.llm import ChatDone, TextDelta
from deployments.vad import FRAME_SAMPLES, VadRequest, initial_states
from serve_app.serve_config import APP_NAME
from tests.conftest import REPO_ROOT
from tests.drawn_text import text_png
from tests.graph_harness import local_graph
from tests.text_normalise import normalise


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    with local_graph(tmp_path_factory.mktemp("db")) as port:
        yield {"port": port, "handle": lambda name: serve.get_deployment_handle(name, app_name=APP_NAME)}


def test_every_deployment_answers_through_its_handle(graph, clip_by_name):
    async def calls():
        clip = clip_by_name("librispeech_1089-134691-0000.wav")
        audio = clip.pcm16().astype(np.float32) / 32768
        frames = audio[: audio.size // FRAME_SAMPLES * FRAME_SAMPLES].reshape(1, -1, FRAME_SAMPLES)
        vad = await graph["handle"]("VAD").detect.remote(VadRequest(frames, initial_states(1)))
        text = await graph["handle"]("STT").transcribe.remote(clip.pcm16())
        events = [e async for e in graph["handle"]("LLM").options(stream=True).chat.remote(
            {"messages": [{"role": "user", "content": "Say hello to me."}], "max_tokens": 24})]
        chunks = [c async for c in graph["handle"]("TTS").options(stream=True).synthesize.remote(
            {"text": "Hello from the graph.", "sample_rate": 24000})]
        image = text_png("RAY SERVE", size=(480, 160), at=(20, 40), font_size=60)
        description = await graph["handle"]("Vision").describe.remote(image, None)
        return vad, text, events, chunks, description

    vad, text, events, chunks, description = asyncio.run(calls())
    assert (vad.probabilities > 0.5).sum() >= 8
    assert normalise(text.text) == "he could wait no longer"
    assert sum(isinstance(e, TextDelta) for e in events) >= 3 and isinstance(events[-1], ChatDone)
    assert len(chunks) >= 2 and all(len(c) % 2 == 0 for c in chunks)
    assert "RAY SERVE" in description.upper()


def test_bad_input_comes_back_as_model_input_error_and_replicas_survive(graph, clip_by_name):
    async def calls():
        with pytest.raises(ModelInputError) as empty:
            await graph["handle"]("STT").transcribe.remote(np.zeros(0, np.int16))
        with pytest.raises(ModelInputError) as not_image:
            await graph["handle"]("Vision").describe.remote(b"definitely not an image", None)
        with pytest.raises(ModelInputError) as no_text:
            async for _ in graph["handle"]("TTS").options(stream=True).synthesize.remote({"text": "  "}):
                pass
        after = await graph["handle"]("STT").transcribe.remote(clip_by_name("speechcommands_yes.wav").pcm16())
        return empty.value.code, not_image.value.code, no_text.value.code, after

    empty, not_image, no_text, after = asyncio.run(calls())
    assert (empty, not_image, no_text) == ("empty_audio", "not_an_image", "empty_text")
    assert normalise(after.text) == "yes"


def test_concurrent_vad_calls_are_batched_and_equal_solo_results(graph, speech_clips):
    clips = [c for c in speech_clips if c.kind == "speech"][:8]
    streams = []
    for clip in clips:
        audio = clip.pcm16()[: 16000].astype(np.float32) / 32768
        streams.append(audio[: audio.size // FRAME_SAMPLES * FRAME_SAMPLES].reshape(1, -1, FRAME_SAMPLES))

    async def calls():
        handle = graph["handle"]("VAD")
        together = await asyncio.gather(*(handle.detect.remote(VadRequest(s, initial_states(1))) for s in streams))
        alone = [await handle.detect.remote(VadRequest(s, initial_states(1))) for s in streams]
        return together, alone

    together, alone = asyncio.run(calls())
    for a, b in zip(together, alone):
        np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-5)


def test_health_reports_every_service(graph):
    health = httpx.get(f"http://127.0.0.1:{graph['port']}/health", timeout=30).json()
    assert health["status"] == "ok", health
    assert {"vad", "stt", "llm", "tts", "vision", "smart_turn"} <= set(health["services"])


def test_a_voice_turn_over_a_real_websocket(graph, clip_by_name):
    clip = clip_by_name("voice2json_turn_on_living_room_lamp.wav").pcm16()
    audio = np.concatenate([clip, np.zeros(16000 * 3, np.int16)])
    seen = []
    with connect(f"ws://127.0.0.1:{graph['port']}/ws", open_timeout=30) as ws:
        ws.send(json.dumps({"type": "start_conversation", "config": {"binaryAudio": True}}))
        for start in range(0, audio.size, 1600):  # 100 ms chunks, as the web client sends
            ws.send(audio[start : start + 1600].tobytes())
        while True:
            frame = ws.recv(timeout=120)
            seen.append(frame if isinstance(frame, bytes) else json.loads(frame))
            if isinstance(seen[-1], dict) and seen[-1]["type"] == "audio_complete":
                break
    events = [f for f in seen if isinstance(f, dict)]
    final = next(e for e in events if e["type"] == "transcript_final")
    assert normalise(final["text"]) == "turn on the living room lamp"
    assert any(e["type"] == "llm_complete" for e in events)
    assert sum(len(f) for f in seen if isinstance(f, bytes)) > 24000  # > 0.5 s of 24 kHz PCM16
    metrics = httpx.get(f"http://127.0.0.1:{graph['port']}/metrics", timeout=30).text
    assert 'openrealtime_turn_latency_seconds_count{span="first_audio"}' in metrics


def test_an_openai_sdk_voice_turn_through_the_serve_proxy(graph, clip_by_name):
    """The official SDK against /v1/realtime on the deployed graph: every event validated (realtime_harness)."""
    from tests.realtime_harness import assert_answered, realtime, to_24k, with_silence

    clip = to_24k(clip_by_name("voice2json_turn_on_living_room_lamp.wav").pcm16())

    async def turn():
        async with realtime(f"ws://127.0.0.1:{graph['port']}") as rt:
            await rt.configure(turn_detection={"type": "server_vad", "silence_duration_ms": 500})
            await rt.append(with_silence(clip, 1.5))
            done = await rt.until("response.done")
            return rt, done

    rt, done = asyncio.run(turn())
    transcript = rt.of("conversation.item.input_audio_transcription.completed")[0]["transcript"]
    assert normalise(transcript) == "turn on the living room lamp"
    assert_answered(done)
    assert len(rt.audio()) > 24000  # > 0.5 s of 24 kHz PCM16


def test_the_readme_openai_sdk_snippet_runs_as_written(graph, tmp_path):
    """The README's "Use it from the OpenAI SDK" program, unchanged but for the port, on the deployed graph."""
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme.split("## Use it from the OpenAI SDK", 1)[1]
    program = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert "127.0.0.1:8000" in program
    script = tmp_path / "ask.py"
    script.write_text(program.replace("127.0.0.1:8000", f"127.0.0.1:{graph['port']}"))
    clip = REPO_ROOT.parent / "shared" / "speech" / "librispeech_1089-134691-0000.wav"
    run = subprocess.run([sys.executable, str(script), str(clip)], check=False, cwd=tmp_path, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    heard = run.stdout.split("you said:", 1)[1].splitlines()[0]
    assert normalise(heard) == "he could wait no longer"
    assert "\ncompleted;" in run.stdout or "\nincomplete;" in run.stdout  # incomplete: at the token limit
    with wave.open(str(tmp_path / "answer.wav")) as answer:
        assert answer.getframerate() == 24000 and answer.getnframes() > 12000  # > 0.5 s of speech
