"""The web client in a real browser: Debian chromium, driven headless by Playwright, against
configs/local.yaml deployed on a 2-CPU Ray instance, with a WAV file as its microphone.

Every wait is on the page's own state (`window.openRealtime`), never on a sleep. Chromium loops the
fake microphone file, so each test builds its WAV: the speech it needs, then enough silence that
the loop never comes round during the test.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile
from playwright.sync_api import Page, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from ray import serve

from serve_app.serve_config import APP_NAME
from tests.conftest import REPO_ROOT
from tests.drawn_text import text_png
from tests.graph_harness import local_graph
from tests.text_normalise import normalise

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT = REPO_ROOT / "docs" / "screenshot.png"
CHROMIUM_FLAGS = [
    "--use-fake-device-for-media-stream",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PHONE = {"width": 412, "height": 860}
RATE = 16000
# Long answers, so a reply is still playing when the barge-in clip starts talking over it.
STORYTELLER = ("You are a friendly storyteller. Answer every message with a long story of at least eight "
               "sentences, whatever the question.")


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/system_deps.sh (apt-get install chromium)")
    # Serve's Python proxy here (RAY_SERVE_ENABLE_HA_PROXY=0), HAProxy in test_serve_graph: both data planes stay real
    with local_graph(tmp_path_factory.mktemp("db"), haproxy=False, instructions=STORYTELLER,
                     spoken_reply_tokens=120) as port:
        yield f"http://127.0.0.1:{port}/"


@pytest.fixture(scope="module")
def story_request(graph) -> np.ndarray:
    """A spoken request for a long answer, in the graph's own voice (16 kHz PCM16)."""

    async def synthesize() -> bytes:
        handle = serve.get_deployment_handle("TTS", app_name=APP_NAME).options(stream=True)
        request = {"text": "Please tell me a long story about a dragon who learns to fly.", "sample_rate": RATE}
        return b"".join([chunk async for chunk in handle.synthesize.remote(request)])

    # in a thread of its own: Playwright's sync API keeps an event loop running on this one
    with ThreadPoolExecutor(1) as thread:
        return np.frombuffer(thread.submit(asyncio.run, synthesize()).result(), np.int16)


@pytest.fixture(scope="module")
def playwright():
    with sync_playwright() as driver:
        yield driver


@pytest.fixture
def microphone_wav(tmp_path, clip_by_name):
    """A WAV for the fake microphone: clip names, seconds of silence and PCM16 arrays, in order."""

    def piece(part: str | float | np.ndarray) -> np.ndarray:
        if isinstance(part, np.ndarray):
            return part
        return np.zeros(int(part * RATE), np.int16) if isinstance(part, float | int) else clip_by_name(part).pcm16()

    def build(*parts: str | float | np.ndarray) -> Path:
        pieces = [piece(part) for part in parts]
        path = tmp_path / "microphone.wav"
        soundfile.write(path, np.concatenate(pieces), RATE, subtype="PCM_16")
        return path

    return build


@contextlib.contextmanager
def browser_page(playwright, url: str, microphone: Path | None, *, allow_microphone: bool = True) -> Iterator[Page]:
    """The page in a fresh headless Chromium whose microphone plays `microphone`; fails on any JS error."""
    flags = list(CHROMIUM_FLAGS)
    if allow_microphone:
        flags.append("--use-fake-ui-for-media-stream")  # answers the permission prompt with "allow"
    if microphone is not None:
        flags.append(f"--use-file-for-fake-audio-capture={microphone}")
    browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=flags)
    problems: list[str] = []
    try:
        page = browser.new_page(viewport=PHONE)
        page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
        page.on("console", lambda m: problems.append(f"console: {m.text}") if m.type == "error" else None)
        page.goto(url)
        wait_for(page, "window.openRealtime && window.openRealtime.connection === 'open'", 30)
        yield page
        assert not problems, problems
    finally:
        browser.close()


def wait_for(page: Page, condition: str, timeout_s: float) -> None:
    """Wait until `condition` (a JS expression; `o` is window.openRealtime) holds on the page."""
    try:
        page.wait_for_function(f"(() => {{ const o = window.openRealtime; return {condition}; }})()",
                               timeout=timeout_s * 1000)
    except PlaywrightTimeout:
        pytest.fail(f"page never reached: {condition}\npage state: {json.dumps(page_state(page))[:3000]}")


def page_state(page: Page) -> dict:
    return page.evaluate("""() => {
        const o = window.openRealtime;
        return Object.fromEntries(Object.entries(o).filter(([k]) => k !== 'debug'));
    }""")


def picture(text: str) -> bytes:
    return text_png(text, size=(520, 160), at=(20, 45), font_size=56)


def test_the_ingress_serves_the_page_and_only_its_assets(graph):
    page = httpx.get(graph, timeout=30)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert 'src="web/app.js"' in page.text
    for asset in ("app.js", "mic-processor.js", "player.js", "styles.css"):
        response = httpx.get(f"{graph}web/{asset}", timeout=30)
        assert response.status_code == 200, asset
    assert "javascript" in httpx.get(f"{graph}web/mic-processor.js", timeout=30).headers["content-type"]
    assert httpx.get(f"{graph}web/missing.js", timeout=30).status_code == 404
    assert httpx.get(f"{graph}web/%2e%2e/ingress.py", timeout=30).status_code == 404


def test_the_page_hears_a_spoken_question_shows_the_reply_and_plays_it(graph, playwright, microphone_wav):
    wav = microphone_wav("voice2json_what_time_is_it.wav", 40.0)
    with browser_page(playwright, graph, wav) as page:
        page.click("#start")
        wait_for(page, "o.micOpen && o.chunksSent > 0", 20)
        wait_for(page, "o.transcripts.length > 0", 90)
        state = page_state(page)
        assert normalise(state["transcripts"][0]) == "what time is it"
        assert normalise(page.inner_text(".msg.user .text")) == "what time is it"

        wait_for(page, "o.replies.length > 0 && o.sourcesEnded >= 3", 120)  # whole chunks played out
        state = page_state(page)
        assert state["tokens"] >= 3
        assert page.inner_text(".msg.assistant .text").strip() == state["replies"][0].strip()
        assert state["chunksReceived"] >= 3 and state["bytesReceived"] > 0
        assert state["samplesScheduled"] >= state["sampleRate"] // 2  # more than half a second of speech
        assert state["sourcesStopped"] == 0 and state["droppedAfterStop"] == 0
        # 100 ms PCM16 chunks at the AudioContext's rate went up while the page listened
        assert state["chunksSent"] >= 20
        wait_for(page, "document.querySelectorAll('#services .svc.ok').length >= 5", 30)
        assert "LLM ok" in page.inner_text("#services")


def test_barge_in_in_the_browser_drops_the_queued_reply_audio(graph, playwright, microphone_wav, story_request):
    # ask for a story, then talk over the answer, three times 8 s apart: the embedded model samples its
    # replies, and one sometimes ends within 8 s (or, on a busy box, has not started): the barge-in
    # that counts is any that comes while a reply is playing (each spoken interruption is a new turn
    # and gets its own long reply, so a later one finds audio queued)
    wav = microphone_wav(story_request, 8.0, "jfk_inaugural_ask_not.wav", 8.0, "jfk_inaugural_ask_not.wav", 8.0,
                         "jfk_inaugural_ask_not.wav", 100.0)
    with browser_page(playwright, graph, wav) as page:
        page.click("#start")
        wait_for(page, "o.transcripts.length > 0", 90)
        assert "dragon" in normalise(page_state(page)["transcripts"][0])
        # a pause inside the request can end a turn early and be barged in on before any audio; the
        # stop that matters is the one that came while the reply was playing
        wait_for(page, "o.stops.some((stop) => stop.cut > 0)", 120)
        state = page_state(page)
        assert "user_speech" in state["interrupted"]
        cut = next(stop for stop in state["stops"] if stop["cut"] > 0)
        assert cut["unplayedMs"] > 0  # audio was queued, and it was dropped
        assert all(stop["activeAfter"] == 0 for stop in state["stops"])  # every scheduled source stopped at once
        assert state["sourcesStopped"] >= cut["cut"] and state["samplesDropped"] > 0
        assert state["droppedAfterStop"] == 0  # nothing stale arrived after stop_speaking
        assert page.locator(".msg.assistant.interrupted").count() >= 1

        # the speech that interrupted is heard as the next turn
        wait_for(page, "o.transcripts.slice(1).join(' ').toLowerCase().includes('country')", 120)
        SCREENSHOT.parent.mkdir(exist_ok=True)
        page.screenshot(path=str(SCREENSHOT))  # mid-conversation: a reply cut short, the next turn heard
        assert page_state(page)["droppedAfterStop"] == 0
    assert 0 < SCREENSHOT.stat().st_size < 400_000


def test_an_image_and_a_typed_message_round_trip(graph, playwright, microphone_wav, tmp_path):
    picked = tmp_path / "picked.png"
    picked.write_bytes(picture("HELLO BROWSER"))
    with browser_page(playwright, graph, microphone_wav(60.0)) as page:
        page.fill("#text", "What does it say?")  # becomes the image's question
        page.set_input_files("#image-input", str(picked))
        wait_for(page, "o.visionResults.length === 1", 60)
        assert "HELLO BROWSER" in page_state(page)["visionResults"][0].upper()
        assert "HELLO BROWSER" in page.inner_text(".card.image .analysis").upper()
        assert page.inner_text(".card.image .prompt") == "What does it say?"

        dropped = base64.b64encode(picture("DROPPED HERE")).decode()
        transfer = page.evaluate_handle("""(data) => {
            const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], 'dropped.png', {type: 'image/png'}));
            return transfer;
        }""", dropped)
        page.dispatch_event("#conversation", "drop", {"dataTransfer": transfer})
        wait_for(page, "o.visionResults.length === 2", 60)
        assert "DROPPED HERE" in page.locator(".card.image .analysis").nth(1).inner_text().upper()

        page.fill("#text", "Tell me about the pictures I showed you.")
        page.press("#text", "Enter")
        wait_for(page, "o.transcripts.includes('Tell me about the pictures I showed you.')", 30)
        wait_for(page, "o.replies.length === 1 && o.sourcesStarted > 0", 120)
        assert page.locator(".msg.user").count() == 1 and page.locator(".msg.assistant").count() == 1


def test_the_page_reconnects_resumes_and_keeps_the_conversation(graph, playwright, microphone_wav):
    with browser_page(playwright, graph, microphone_wav(60.0)) as page:
        page.fill("#text", "Hello there.")
        page.press("#text", "Enter")
        wait_for(page, "o.replies.length === 1 && o.sessionId", 120)
        session_id = page_state(page)["sessionId"]
        on_screen = page.locator(".msg").count()

        page.evaluate("window.openRealtime.debug.dropConnection()")  # as if the network went away
        wait_for(page, "o.resumes === 1 && o.connection === 'open' && o.opens === 2", 30)
        assert page_state(page)["sessionId"] == session_id
        assert page.locator(".msg").count() == on_screen  # the conversation stayed on screen

        page.fill("#text", "Thank you.")
        page.press("#text", "Enter")
        wait_for(page, "o.replies.length === 2", 120)

        page.reload()  # a new page on the same tab: the server's copy of the conversation comes back
        wait_for(page, "o.resumes === 1 && o.connection === 'open'", 30)
        assert page_state(page)["sessionId"] == session_id
        texts = page.locator(".msg.user .text").all_inner_texts()
        assert texts[:2] == ["Hello there.", "Thank you."]


def test_tool_cards_and_errors_are_shown_in_plain_words(graph, playwright, microphone_wav, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"this is not a picture at all")
    with browser_page(playwright, graph, microphone_wav(60.0)) as page:
        # a real server error: the vision service refuses bytes that are not an image
        page.set_input_files("#image-input", str(broken))
        wait_for(page, "o.errors.length === 1", 60)
        assert page_state(page)["errors"][0]["code"] == "not_an_image"
        assert "does not look like a picture" in page.inner_text("#notice")
        assert page.locator(".card.image.failed").count() == 1

        # tool events as the protocol sends them (the embedded model never chooses a tool by itself)
        page.evaluate("""() => {
            const receive = window.openRealtime.debug.receive;
            receive({type: 'tool_call_start', toolName: 'calculator', args: {expression: '6*7'}, callId: 'c1'});
            receive({type: 'tool_call_result', toolName: 'calculator', result: {value: 42}, callId: 'c1'});
            receive({type: 'error', message: 'llm timed out; send retry_turn', phase: 'llm', code: 'timeout'});
        }""")
        card = page.locator(".card.tool")
        assert "calculator" in card.inner_text() and '"expression": "6*7"' in card.inner_text()
        assert '"value": 42' in card.inner_text() and "done" in card.inner_text()
        assert "could not come up with an answer" in page.inner_text("#notice")
        assert page.locator("#retry").is_visible()


def test_a_denied_microphone_says_how_to_allow_it_and_offers_typing(graph, playwright):
    with browser_page(playwright, graph, None, allow_microphone=False) as page:
        focus_order = []
        for _ in range(6):  # everything a person needs is reachable with Tab
            page.keyboard.press("Tab")
            focus_order.append(page.evaluate("document.activeElement.id"))
        assert {"start", "text", "pick-image", "send"} <= set(focus_order)

        page.focus("#start")
        page.keyboard.press("Enter")
        wait_for(page, "o.lastError && o.lastError.phase === 'microphone'", 30)
        notice = page.inner_text("#notice")
        assert "Microphone access is blocked" in notice and "Allow" in notice and "type" in notice
        assert page.evaluate("document.activeElement.id") == "text"
        wait_for(page, "o.state === 'listening'", 30)  # the session still started: typing works
        assert "microphone off" in page.inner_text("#phase")
