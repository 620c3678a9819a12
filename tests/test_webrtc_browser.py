"""A browser app built for OpenAI Realtime, over WebRTC: Debian Chromium (headless, driven by
Playwright) runs @openai/agents' RealtimeSession with its WebRTC transport (OpenAIRealtimeWebRTC)
from a page this test serves on another origin (so CORS is exercised as a real app's would be), against the in-process server with the real VAD, Whisper, end-of-turn
model and Piper (the LLM's replies scripted through the fake Ollama). A WAV file is its microphone.

Every wait is on the page's own state (window.webrtcTest), never a sleep. The JS SDK runs with its
defaults (semantic_vad, its transcription model), and an ephemeral key, as it insists on in a browser.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile
from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from playwright.sync_api import Page, sync_playwright

from deployments.llm import LlmOptions
from serve_app.clients.turn_end import InProcessTurnEnd
from serve_app.host import SessionHost
from tests.conftest import REPO_ROOT
from tests.fake_ollama import FakeReply
from tests.live_server import LiveServer
from tests.session_harness import build_app, server_options
from tests.text_normalise import normalise

CHROMIUM = Path("/usr/bin/chromium")
JS_DIR = REPO_ROOT / "tests" / "js"
BUNDLE = JS_DIR / "node_modules" / "@openai" / "agents-realtime" / "dist" / "bundle" / "openai-realtime-agents.mjs"
API_KEY = "sk-browser-test"
FLAGS = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream", "--no-sandbox", "--disable-gpu",
         "--autoplay-policy=no-user-gesture-required", "--allow-loopback-in-peer-connection",
         "--disable-features=WebRtcHideLocalIpsWithMdns", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]
REPLY = "He waited as long as he could, and then he went home."
STORY = " ".join(f"Sentence number {n} of a long story about the sea." for n in range(1, 25))


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/system_deps.sh (apt-get install chromium)")
    if not BUNDLE.exists():
        pytest.fail(f"{BUNDLE} is missing: run `npm ci --prefix tests/js` (make test does)")
    with sync_playwright() as driver:
        yield driver


@contextmanager
def page_with_microphone(driver, url: str, wav: Path) -> Iterator[Page]:
    launched = driver.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                      args=[*FLAGS, f"--use-file-for-fake-audio-capture={wav}"])
    problems: list[str] = []
    try:
        page = launched.new_page()
        page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
        page.on("console", lambda m: problems.append(f"console: {m.text}") if m.type == "error" else None)
        page.goto(url)
        page.wait_for_function("window.webrtcTest && window.webrtcTest.status !== 'starting'", timeout=30_000)
        state = page.evaluate("window.webrtcTest")
        assert state["status"] == "connected", state["errors"]
        yield page
        assert not problems, problems
    finally:
        launched.close()


def wait_for_event(page: Page, kind: str, timeout_s: float = 90, **match) -> dict:
    condition = " && ".join([f"e.type === {json.dumps(kind)}"] + [f"e[{json.dumps(k)}] === {json.dumps(v)}"
                                                                  for k, v in match.items()])
    page.wait_for_function(f"window.webrtcTest.events.some(e => {condition})", timeout=timeout_s * 1000)
    return page.evaluate(f"window.webrtcTest.events.find(e => {condition})")


def test_the_js_agents_sdk_webrtc_transport_talks_to_the_server_from_chromium(
        browser, models, smart_turn_model, fake_ollama, tmp_path, clip_by_name):
    fake_ollama.script(FakeReply(content=REPLY), FakeReply(content=STORY, chunks=40))
    wav = tmp_path / "microphone.wav"
    question = clip_by_name("librispeech_1089-134691-0000.wav").pcm16()  # "HE COULD WAIT NO LONGER"
    silence = np.zeros(16000 * 3, np.int16)  # the call is up before the question starts
    soundfile.write(wav, np.concatenate([silence, question, np.zeros(16000 * 120, np.int16)]), 16000, subtype="PCM_16")

    llm = models.with_llm(LlmOptions(backend="ollama", ollama_host=fake_ollama.url, ollama_model="llama3.2"))
    options = server_options(tmp_path / "db.sqlite3").model_copy(update={"api_keys": [API_KEY]})
    host = SessionHost(llm, options, InProcessTurnEnd(smart_turn_model))
    pages = FastAPI()
    pages.mount("/js", StaticFiles(directory=JS_DIR))
    with LiveServer(build_app(host)) as server, LiveServer(pages) as site:  # two ports: two origins
        base = f"http://127.0.0.1:{server.port}"
        secret = httpx.post(f"{base}/v1/realtime/client_secrets", headers={"Authorization": f"Bearer {API_KEY}"},
                            json={"session": {"type": "realtime"}}).json()["value"]
        with page_with_microphone(browser, f"http://127.0.0.1:{site.port}/js/webrtc_page.html?key={secret}&server={base}", wav) as page:
            done = wait_for_event(page, "response.done")
            stopped = wait_for_event(page, "output_audio_buffer.stopped", 30)
            page.wait_for_function("window.webrtcTest.history.filter(i => i.role === 'user' && "
                                   "i.content.some(c => c.transcript)).length > 0", timeout=30_000)
            page.wait_for_function("window.webrtcTest.inbound && window.webrtcTest.inbound.energy > 0", timeout=10_000)
            audio = page.evaluate("window.webrtcTest.inbound")
            # a typed turn for a long story, then the SDK's interrupt() while it plays
            page.evaluate("window.say('Tell me a long story about the sea.')")
            page.wait_for_function(
                "window.webrtcTest.events.filter(e => e.type === 'output_audio_buffer.started').length === 2",
                timeout=60_000)
            played = page.evaluate("window.webrtcTest.inbound.seconds")
            page.wait_for_function(f"window.webrtcTest.inbound.seconds > {played + 3.5}", timeout=10_000)  # its first sentence
            page.evaluate("window.interrupt()")
            cleared = wait_for_event(page, "output_audio_buffer.cleared", 30)
            page.wait_for_function("window.webrtcTest.events.filter(e => e.type === 'response.done').length === 2",
                                   timeout=30_000)
            truncated = wait_for_event(page, "conversation.item.truncated", 30)
            retrieved = page.wait_for_function(  # the SDK reads the cut item back after conversation.item.truncated
                "window.webrtcTest.events.find(e => e.type === 'conversation.item.retrieved' && "
                f"e.item.id === {json.dumps(truncated['item_id'])})", timeout=30_000).json_value()
            call_id = page.evaluate("window.webrtcTest.callId")
            assert call_id in host.calls.calls
            page.evaluate("window.hangUp()")
            deadline = time.monotonic() + 20
            while call_id in host.calls.calls and time.monotonic() < deadline:
                page.wait_for_timeout(50)  # the server's side of the hang-up, seen from this thread
            state = page.evaluate("window.webrtcTest")

    assert not state["errors"], state["errors"]
    types = [e["type"] for e in state["events"]]
    assert types[0] == "session.created" and "session.updated" in types
    assert "response.output_audio.delta" not in types
    assert done["response"]["status"] == "completed" and stopped["response_id"] == done["response"]["id"]
    assert types.index("output_audio_buffer.started") < types.index("response.done") < types.index(
        "output_audio_buffer.stopped")
    history = {item["itemId"]: item for item in state["history"]}
    order = [(item["role"], item["status"]) for item in state["history"]]
    assert order == [("user", "completed"), ("assistant", "completed"), ("user", "completed"),
                     ("assistant", "incomplete")], state["history"]
    user, assistant = state["history"][0], history[done["response"]["output"][0]["id"]]
    assert normalise(user["content"][0]["transcript"]) == "he could wait no longer"
    assert assistant["content"][0]["transcript"] == REPLY and assistant["status"] == "completed"
    assert audio["packets"] > 100 and audio["energy"] > 0, audio  # seconds of Opus at 20 ms a packet, not silence
    # interrupt(): response.cancel + output_audio_buffer.clear; the server cut the story to what was played
    cancelled = [e for e in state["events"] if e["type"] == "response.done"][1]["response"]
    assert cancelled["status"] == "cancelled" and cleared["response_id"] == cancelled["id"]
    assert types.count("output_audio_buffer.cleared") == 1
    heard = retrieved["item"]["content"][0]["transcript"]
    assert STORY.startswith(heard) and len(heard) < len(STORY) / 2, heard
    told = history[truncated["item_id"]]
    assert told["content"][0]["transcript"] == heard, told  # and so does the SDK's own history
    assert call_id not in host.calls.calls  # the browser's hang-up ended the server's call
