"""Every input a client controls has a bound (serve_app/session/options.py LimitsOptions): past it the
client gets an error with its code and the socket stays usable; a client at the limit is unaffected.

Native checks run over Starlette's test client; the OpenAI ones over a real socket with the SDK,
whose own types validate every error event. The queues' and buffers' bounds are checked on the
objects themselves.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time

import numpy as np
from starlette.testclient import TestClient

from deployments.llm import ChatMessage
from deployments.vad import FRAME_SAMPLES
from serve_app.clients.vad_ticker import VadTicker
from serve_app.host import SessionHost
from serve_app.session.channel import Inbox
from serve_app.session.context import ConversationContext
from serve_app.session.events import AudioOut, Outgoing, Ping, Pong
from serve_app.session.inbox import Verdict
from serve_app.session.outbox import Outbox
from tests.drawn_text import text_png
from tests.live_server import LiveServer
from tests.realtime_harness import realtime
from tests.session_harness import Conversation, build_app, server_options


def native(models, tmp_path, **limits) -> tuple[TestClient, SessionHost]:
    host = SessionHost(models, server_options(tmp_path / "db.sqlite3", limits=limits))
    return TestClient(build_app(host)), host


def start(talk: Conversation, **config) -> str:
    talk.send({"type": "start_conversation", "config": config})
    session_id = talk.until("session_started")["sessionId"]
    talk.until("state_change", state="listening")
    return session_id


def settled(talk: Conversation) -> None:
    """Everything sent before has been handled: the inbox is first in, first out."""
    talk.send({"type": "ping", "t": "settled"})
    talk.until("pong", t="settled")


# ---- native -----------------------------------------------------------------------------------


def test_messages_over_the_rate_are_dropped_with_one_error_and_the_socket_stays_usable(models, tmp_path):
    client, _ = native(models, tmp_path, message_burst=10, messages_per_s=2)
    with client, client.websocket_connect("/ws") as ws:
        talk = Conversation(ws)
        talk.send({"type": "start_conversation"})  # 1 of the burst of 10
        for t in range(20):
            talk.send({"type": "ping", "t": t})
        error = talk.until("error")  # said at once, ahead of the answers to the messages before it
        talk.until("pong", t=8)
        time.sleep(0.6)  # what is under test: the bucket refills at 2 a second, so one more message is due
        talk.send({"type": "ping", "t": "after"})
        after = talk.until("pong", t="after")
    pongs = [f["t"] for f in talk.frames if isinstance(f, dict) and f["type"] == "pong"]
    assert pongs == [*range(9), "after"]  # within the burst: every one answered; past it: none
    assert error["code"] == "rate_limit_exceeded" and "dropped" in error["message"]
    assert talk.types().count("error") == 1  # one notice for the run, not one per dropped message
    assert after["t"] == "after"


def test_audio_faster_than_real_time_past_the_burst_is_dropped_with_one_error(models, tmp_path):
    client, host = native(models, tmp_path, audio_burst_s=2)
    chunk = np.zeros(1600, np.int16).tobytes()  # 100 ms at 16 kHz
    with client:
        with client.websocket_connect("/ws") as ws:  # a recorded clip within the burst: all of it taken
            talk = Conversation(ws)
            within = host.sessions[start(talk)]
            for _ in range(15):
                ws.send_bytes(chunk)
            settled(talk)
            taken_within = within.audio.end
        with client.websocket_connect("/ws") as ws:  # 5 s at once: 2 s taken, the rest dropped
            talk = Conversation(ws)
            over = host.sessions[start(talk)]
            for _ in range(50):
                ws.send_bytes(chunk)
            settled(talk)
            taken_over = over.audio.end
            errors = [f for f in talk.frames if isinstance(f, dict) and f["type"] == "error"]
    assert taken_within == 15 * 1600
    assert 19 * 1600 <= taken_over <= 21 * 1600
    assert [(e["code"], e["phase"]) for e in errors] == [("audio_too_fast", "audio")]


def test_instructions_and_tools_over_their_limits_are_refused_and_a_session_at_the_limit_starts(models, tmp_path):
    tool = {"type": "function", "function": {"name": "a", "description": "", "parameters": {"type": "object"}}}
    big = {"type": "function", "function": {"name": "b", "description": "x" * 3000, "parameters": {"type": "object"}}}
    client, _ = native(models, tmp_path, instructions_chars=100, tools=2, tools_bytes=2000)
    with client, client.websocket_connect("/ws") as ws:
        talk = Conversation(ws)
        codes = []
        for config in ({"instructions": "x" * 101}, {"tools": [tool, tool, tool]}, {"tools": [big]}):
            talk.send({"type": "start_conversation", "config": config})
            codes.append(talk.until("error")["code"])
        started = start(talk, instructions="x" * 100, tools=[tool, tool])
    assert codes == ["instructions_too_long", "too_many_tools", "tools_too_large"]
    assert "session_started" in talk.types() and started
    assert talk.types().index("session_started") > talk.types().index("error")


def test_a_user_message_or_tool_result_over_the_text_limit_is_refused(models, tmp_path):
    client, _ = native(models, tmp_path, text_chars=50)
    with client, client.websocket_connect("/ws") as ws:
        talk = Conversation(ws)
        start(talk)
        talk.send({"type": "user_message", "text": "x" * 51})
        long_message = talk.until("error")
        talk.send({"type": "tool_result", "callId": "call_1", "result": {"rows": ["y" * 10] * 10}})
        long_result = talk.until("error")
        settled(talk)
    assert long_message["code"] == "text_too_long" and "51 characters" in long_message["message"]
    assert long_result["code"] == "text_too_long"
    assert "state_change" not in talk.types()[talk.types().index("error"):]  # nothing was answered


def test_images_over_the_pixel_limit_or_past_those_in_flight_are_refused(models, tmp_path):
    client, _ = native(models, tmp_path, image_pixels=200 * 100, images_in_flight=1)

    def upload(png: bytes) -> dict:
        return {"type": "upload_image", "image": base64.b64encode(png).decode()}

    with client, client.websocket_connect("/ws") as ws:
        talk = Conversation(ws)
        start(talk)
        talk.send(upload(text_png("BIG", size=(201, 100), at=(5, 20), font_size=40)))
        too_big = talk.until("error")
        talk.send(upload(text_png("GO", size=(200, 100), at=(5, 20), font_size=40)))  # at the limit
        talk.send(upload(text_png("NO", size=(200, 100), at=(5, 20), font_size=40)))  # while the first is described
        busy = talk.until("error")
        described = talk.until("vision_result")
    assert too_big["code"] == "image_too_many_pixels" and "201x100" in too_big["message"]
    assert busy["code"] == "too_many_images"
    assert described["description"]  # the one at the limit was described


# ---- the queues and buffers themselves ------------------------------------------------------


async def test_the_inbox_makes_client_commands_wait_for_room_but_never_its_own_results():
    inbox = Inbox(max_commands=3)
    for t in range(3):
        inbox.put_nowait(Ping(t))
    for pause in range(5):
        inbox.put_nowait(Verdict(pause, 0.9))  # a helper's result: always taken, never counted
    waiting = asyncio.get_running_loop().create_task(inbox.room())
    await asyncio.sleep(0)
    blocked = not waiting.done()
    await inbox.get()  # the actor takes one command
    await asyncio.wait_for(waiting, 1)
    assert blocked and inbox.commands == 2 and inbox.peak_commands == 3 and inbox.qsize() == 7


def test_the_outbox_overflows_once_over_its_bound_and_holds_nothing_after():
    outbox = Outbox(max_events=10, max_bytes=10_000)
    for t in range(10):
        outbox.put(Outgoing(Pong(t)))
    assert not outbox.overflowed.is_set() and outbox.events == 10
    outbox.put(Outgoing(Pong("one too many")))
    outbox.put(Outgoing(AudioOut(b"\0" * 4800, 0)))
    assert outbox.overflowed.is_set() and outbox.events == 1  # only the end-of-stream marker
    assert outbox.peak_events == 10 and outbox.dropped == 12 and outbox.bytes == 0
    by_bytes = Outbox(max_events=100, max_bytes=10_000)
    by_bytes.put(Outgoing(AudioOut(b"\0" * 9000, 0)))
    by_bytes.put(Outgoing(AudioOut(b"\0" * 9000, 1)))
    assert by_bytes.overflowed.is_set() and by_bytes.peak_bytes < 10_000


async def test_the_vad_stream_skips_its_oldest_audio_past_its_bound_and_keeps_positions():
    async def never_called(request):
        raise AssertionError("no tick in this test")

    ticker = VadTicker(never_called, tick_s=60)
    stream = ticker.open_stream(lambda frames: None, max_pending=4 * FRAME_SAMPLES)
    audio = np.arange(10 * FRAME_SAMPLES, dtype=np.float32)
    stream.push(audio)
    frames = stream.whole_frames(limit=32)
    ticker._task.cancel()
    assert stream.skipped == 6 * FRAME_SAMPLES and stream._pending_samples == 0
    assert frames.shape == (4, FRAME_SAMPLES) and frames[0, 0] == 6 * FRAME_SAMPLES  # the newest four frames
    assert stream.position == 6 * FRAME_SAMPLES  # skipped audio still counts on the timeline


def test_the_context_keeps_at_most_its_messages_and_forgets_before_the_window():
    context = ConversationContext(max_turns=4, max_chars=100_000, max_messages=20)
    for turn in range(30):
        context.add(ChatMessage(role="user", content=f"question {turn}"), f"u{turn}")
        context.add(ChatMessage(role="assistant", content=f"answer {turn}"), f"a{turn}")
        window = context.for_llm("system")
    assert len(context.messages) <= 20
    kept = {id(m) for m in context.messages}
    assert all(id(m) in kept for m in window[1:])  # what the LLM is sent is never what was forgotten
    assert window[-1].content == "answer 29"
    assert context.find("u0") is None and context.find("a29") is not None
    assert all(id(m) in kept for named in context.ids.values() for m in named)


# ---- OpenAI Realtime -----------------------------------------------------------------------------


def live(models, tmp_path, **limits) -> LiveServer:
    return LiveServer(build_app(SessionHost(models, server_options(tmp_path / "db.sqlite3", limits=limits))))


async def test_openai_limits_are_openai_errors_and_leave_the_session_unchanged(models, tmp_path):
    one_second = base64.b64encode(np.zeros(24000, np.int16).tobytes()).decode()  # 64,000 base64 bytes
    half = base64.b64encode(np.zeros(12000, np.int16).tobytes()).decode()
    tool = {"type": "function", "name": "lamp", "description": "", "parameters": {"type": "object"}}
    with live(models, tmp_path, append_bytes=64_000, uncommitted_audio_s=1, instructions_chars=100, tools=1,
              text_chars=100, items=10) as server:
        async with realtime(server.ws_url) as rt:
            send = rt.connection.send_raw
            await rt.configure(modalities=["text"], turn_detection=None, instructions="short")
            await send(json.dumps({"type": "input_audio_buffer.append", "audio": one_second + half[:4]}))
            append = await rt.until("error")
            for _ in range(2):  # at the buffer's limit: taken
                await send(json.dumps({"type": "input_audio_buffer.append", "audio": half}))
            await send(json.dumps({"type": "input_audio_buffer.append", "audio": half, "event_id": "evt_full"}))
            full = await rt.until("error")
            await send(json.dumps({"type": "input_audio_buffer.commit"}))
            committed = await rt.until("input_audio_buffer.committed")
            await send(json.dumps({"type": "session.update", "session": {"type": "realtime",
                                                                         "instructions": "x" * 101}}))
            instructions = await rt.until("error")
            await send(json.dumps({"type": "session.update", "session": {"type": "realtime", "tools": [tool, tool]}}))
            tools = await rt.until("error")
            await send(json.dumps({"type": "response.create", "response": {"instructions": "y" * 101}}))
            response = await rt.until("error")
            await rt.say("z" * 101)
            item = await rt.until("error")
            for n in range(12):
                await rt.say(f"message {n}")
                await rt.until("conversation.item.done")
            last = rt.events[-1]["item"]["id"]
            first = next(e["item"]["id"] for e in rt.events if e["type"] == "conversation.item.done")
            await rt.connection.conversation.item.retrieve(item_id=first)
            forgotten = await rt.until("error")
            await rt.connection.conversation.item.retrieve(item_id=last)
            kept = await rt.until("conversation.item.retrieved")
            unchanged = await rt.configure()
    got = [(e["error"]["code"], e["error"].get("param"), e["error"]["type"])
           for e in (append, full, instructions, tools, response, item)]
    assert got == [("audio_append_too_large", "audio", "invalid_request_error"),
                   ("input_audio_buffer_full", "audio", "invalid_request_error"),
                   ("instructions_too_long", "session.instructions", "invalid_request_error"),
                   ("too_many_tools", "session.tools", "invalid_request_error"),
                   ("instructions_too_long", "response.instructions", "invalid_request_error"),
                   ("text_too_long", "item.content", "invalid_request_error")]
    assert full["error"]["event_id"] == "evt_full"
    assert committed["item_id"]
    assert forgotten["error"]["code"] == "item_not_found" and kept["item"]["id"] == last
    assert unchanged["session"]["instructions"] == "short" and unchanged["session"]["tools"] == []


async def test_openai_messages_over_the_rate_get_one_rate_limit_error(models, tmp_path):
    with live(models, tmp_path, message_burst=5, messages_per_s=1) as server:
        async with realtime(server.ws_url) as rt:
            for _ in range(12):
                await rt.connection.send_raw(json.dumps({"type": "input_audio_buffer.clear"}))
            error = await rt.until("error")
            cleared = rt.types().count("input_audio_buffer.cleared")
    assert cleared == 5
    assert error["error"]["code"] == "rate_limit_exceeded" and error["error"]["type"] == "invalid_request_error"
