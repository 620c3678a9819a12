"""The real graph: `configs/local.yaml` deployed on a 2-CPU Ray instance, called through handles
and through real WebSockets on Ray Serve's HAProxy ingress (the default data plane; the web
client tests run the same graph through the Python proxy)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
import wave

import httpx
import numpy as np
import pytest
from ray import serve
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from deployments.errors import ModelInputError
from deployments.llm import ChatDone, TextDelta
from deployments.vad import FRAME_SAMPLES, VadRequest, initial_states
from serve_app.serve_config import APP_NAME, deploy, load_serve_config, with_app_args
from tests.conftest import REPO_ROOT
from tests.drawn_text import text_png
from tests.graph_harness import local_graph
from tests.text_normalise import normalise


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    db_dir = tmp_path_factory.mktemp("db")
    with local_graph(db_dir, drain_s=10) as port:  # time for the redeploy test to talk to a draining replica
        yield {"port": port, "db_dir": db_dir,
               "handle": lambda name: serve.get_deployment_handle(name, app_name=APP_NAME)}


def test_every_deployment_answers_through_its_handle(graph, clip_by_name):
    async def calls():
        clip = clip_by_name("librispeech_1089-134691-0000.wav")
        audio = clip.pcm16().astype(np.float32) / 32768
        frames = audio[: audio.size // FRAME_SAMPLES * FRAME_SAMPLES].reshape(1, -1, FRAME_SAMPLES)
        vad = await graph["handle"]("VAD").detect.remote(VadRequest(frames, initial_states(1)))
        text = await graph["handle"]("STT").transcribe.remote(clip.pcm16())
        events = [e async for e in graph["handle"]("LLM").options(stream=True).chat.remote(
            {"messages": [{"role": "user", "content": "Say hello to me."}], "max_tokens": 24})]
        read = await graph["handle"]("LLM").prefill.remote(
            {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello."}]})
        chunks = [c async for c in graph["handle"]("TTS").options(stream=True).synthesize.remote(
            {"text": "Hello from the graph.", "sample_rate": 24000})]
        image = text_png("RAY SERVE", size=(480, 160), at=(20, 40), font_size=60)
        description = await graph["handle"]("Vision").describe.remote(image, None)
        return vad, text, events, chunks, description, read

    vad, text, events, chunks, description, read = asyncio.run(calls())
    assert (vad.probabilities > 0.5).sum() >= 8
    assert normalise(text.text) == "he could wait no longer"
    assert sum(isinstance(e, TextDelta) for e in events) >= 3 and isinstance(events[-1], ChatDone)
    assert read > 5  # a prompt the LLM replica read ahead (the context window moved on)
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
    assert {"vad", "stt", "llm", "tts", "vision", "turn_end", "smart_turn"} <= set(health["services"])
    assert all(set(state) == {"status"} for state in health["services"].values()), health  # no backend details
    checks = {httpx.get(f"http://127.0.0.1:{graph['port']}/health", timeout=30).json()["checked_at"] for _ in range(5)}
    assert len(checks) <= 2  # cached reports (a background refresh may land in between), not a round of calls each


def test_the_page_and_its_assets_come_through_haproxy(graph):
    page = httpx.get(f"http://127.0.0.1:{graph['port']}/", timeout=30)
    assert page.status_code == 200 and "<html" in page.text.lower()
    assert httpx.get(f"http://127.0.0.1:{graph['port']}/web/app.js", timeout=30).status_code == 200


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


def test_a_webrtc_call_to_the_deployed_ingress(graph, clip_by_name):
    """POST /v1/realtime/calls through HAProxy to the Ingress replica, whose aiortc peer talks Opus over UDP."""
    from tests.realtime_harness import assert_answered
    from tests.webrtc_peer import Peer

    async def call():
        peer = Peer()
        try:
            answer = await peer.call(f"http://127.0.0.1:{graph['port']}/v1/realtime/calls")
            peer.microphone.say(clip_by_name("voice2json_turn_on_living_room_lamp.wav").pcm16())
            transcribed = await peer.until("conversation.item.input_audio_transcription.completed", 120)
            done = await peer.until("response.done", 120)
            await peer.until("output_audio_buffer.stopped", 60)
            return peer, answer, transcribed, done
        finally:
            await peer.close()

    peer, answer, transcribed, done = asyncio.run(call())
    assert answer.status_code == 201 and answer.headers["location"].startswith("/v1/realtime/calls/rtc_")
    assert normalise(transcribed["transcript"]) == "turn on the living room lamp"
    assert_answered(done)
    assert "response.output_audio.delta" not in peer.types()
    assert peer.voiced_s(peer.time_of("output_audio_buffer.started")) > 0.5  # the reply, heard as Opus


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


def test_end_of_turn_calls_of_many_sessions_share_model_runs(graph, clip_by_name, smart_turn_model):
    names = ["librispeech_1089-134691-0000.wav", "voice2json_what_time_is_it.wav", "cmuarctic_a0024.wav"]
    clips = [clip_by_name(name).pcm16() for name in names]
    clips += [clip[: len(clip) // 2] for clip in clips]  # finished and cut-off turns alike

    async def calls():
        handle = graph["handle"]("TurnEnd")
        before = await handle.info.remote()
        together = await asyncio.gather(*(handle.completion_probability.remote(c) for c in clips))
        after = await handle.info.remote()
        return together, after["runs"] - before["runs"]

    together, runs = asyncio.run(calls())
    assert runs < len(clips)  # @serve.batch merged concurrent pauses into shared model runs
    np.testing.assert_allclose(together, [smart_turn_model.completion_probability(c) for c in clips], atol=1e-4)


def test_conversation_load_smoke_run_records_every_turn_and_plots(graph, tmp_path):
    """bench/conversation_load.py for N=2, a few turns: per-turn records, a summary and the plot."""
    from bench import conversation_load as bench

    url = f"ws://127.0.0.1:{graph['port']}/ws"
    stages, summaries = asyncio.run(bench.sweep(url, [2], seconds=12, seed=3, interrupt_share=0.5, stagger_s=1.0,
                                                cores=2))
    turns = stages[0].turns
    assert len([t for t in turns if t.answered]) >= 2, turns
    assert all(t.transcript_s > 0 and t.first_audio_s >= t.transcript_s for t in turns if t.answered)
    assert stages[0].drops == 0 and summaries[0]["server_cpu_s_per_turn"] > 0
    bench.plot(summaries, 1.5, tmp_path / "plot.png", "smoke")
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_redeploy_drains_open_sessions_then_they_resume_on_the_new_replica(graph):
    """Runs last in this module: it replaces the graph's replicas (the graph drains for 10 s)."""
    url = f"ws://127.0.0.1:{graph['port']}/ws"
    changed = with_app_args(load_serve_config(REPO_ROOT / "configs" / "local.yaml"), server={
        "health_timeout_s": 3.0, "session": {"db_path": str(graph["db_dir"] / "sessions.sqlite3")}})
    changed["http_options"]["port"] = graph["port"]
    redeploy = threading.Thread(target=deploy, args=(changed,))
    with connect(url, open_timeout=30) as old:
        old.send(json.dumps({"type": "start_conversation"}))
        started = next_event(old, "session_started")
        began = time.monotonic()
        redeploy.start()
        pongs = 0
        with pytest.raises(ConnectionClosed) as closed:  # the session goes on while its replica drains ...
            while True:
                old.send(json.dumps({"type": "ping", "t": pongs}))
                assert pong(old) == pongs
                pongs += 1
                time.sleep(0.5)  # a heartbeat's pace, not synchronisation
        cut_after = time.monotonic() - began
    redeploy.join()
    # ... new replicas start first, then the old one serves its sockets for the whole drain window
    assert cut_after > 10 and pongs > 10
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012  # a clean "service restart", not a drop
    resume = {"type": "resume_session", "sessionId": started["sessionId"]}
    if started.get("resumeToken"):
        resume["resumeToken"] = started["resumeToken"]
    with connect(url, open_timeout=30) as again:  # the client reconnects: the new replica has the session
        again.send(json.dumps(resume))
        assert next_event(again, "session_resumed")["sessionId"] == started["sessionId"]


def next_event(ws, kind: str) -> dict:
    while True:
        event = json.loads(frame) if isinstance(frame := ws.recv(timeout=60), str) else {}
        if event.get("type") == kind:
            return event


def pong(ws) -> int:
    while True:
        event = json.loads(frame) if isinstance(frame := ws.recv(timeout=30), str) else {}
        if event.get("type") == "pong":
            return event["t"]
