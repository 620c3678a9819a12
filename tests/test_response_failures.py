"""No stuck sessions, no lost writes: a step that fails in an unexpected way ends its response, and the
session takes the next turn; a socket that drops keeps its last words; tool calls never stay pending.

Faults are injected at the model boundary (tests/faulty_models.py: the real models, one step made to
raise something other than ServiceError); every row is read back from the real SQLite file.
"""

from __future__ import annotations

import asyncio
import base64
import json

import numpy as np
import pytest
from starlette.testclient import TestClient
from websockets.sync.client import connect

from deployments.llm import ToolCall
from serve_app.host import SessionHost
from tests.drawn_text import text_png
from tests.faulty_models import FaultyModels
from tests.live_server import LiveServer
from tests.realtime_harness import realtime
from tests.session_harness import Conversation, build_app, server_options, stored_messages, stored_rows
from tests.text_normalise import normalise

SHORT = {"spoken_reply_tokens": 12, "max_response_tokens": 12, "playback_lead_ms": 60_000}
LAMP_TOOL = {"type": "function", "function": {
    "name": "set_lamp", "description": "Turn the living room lamp on or off",
    "parameters": {"type": "object", "properties": {"on": {"type": "boolean"}}, "required": ["on"]}}}


def native(faulty: FaultyModels, db, **options) -> TestClient:
    return TestClient(build_app(SessionHost(faulty, server_options(db, **{**SHORT, **options}))))


def start(talk: Conversation, **config) -> str:
    talk.send({"type": "start_conversation", "config": config})
    session_id = talk.until("session_started")["sessionId"]
    talk.until("state_change", state="listening")
    return session_id


def recv_until(ws, kind: str, timeout: float = 60.0) -> dict:
    while True:
        frame = ws.recv(timeout=timeout)
        if isinstance(frame, str) and json.loads(frame)["type"] == kind:
            return json.loads(frame)


@pytest.mark.parametrize("step", ["llm", "tts"])
def test_a_step_that_raises_ends_the_response_and_the_next_turn_is_answered(models, tmp_path, step):
    faulty = FaultyModels(models)
    faulty.fail.add(step)
    with native(faulty, tmp_path / "db.sqlite3") as client, client.websocket_connect("/ws") as ws:
        talk = Conversation(ws)
        start(talk)
        talk.send({"type": "user_message", "text": "Say hello."})
        error = talk.until("error")
        talk.until("state_change", state="listening")
        talk.send({"type": "user_message", "text": "Say hello again."})
        answer = talk.until("llm_complete")
        talk.until("audio_complete")
    assert (error["phase"], error["code"]) == (step, "internal_error")
    assert "InjectedFault" in error["message"]
    assert answer["fullText"].strip()


def test_a_transcription_that_raises_is_an_error_and_retry_turn_transcribes_the_same_audio(models, tmp_path,
                                                                                          clip_by_name):
    faulty = FaultyModels(models)
    faulty.fail.add("stt")
    with native(faulty, tmp_path / "db.sqlite3") as client, client.websocket_connect("/ws") as ws:
        talk = Conversation(ws)
        start(talk)
        talk.speak(clip_by_name("librispeech_1089-134691-0000.wav").pcm16())
        error = talk.until("error")
        talk.until("state_change", state="listening")  # not left transcribing for ever
        talk.send({"type": "retry_turn"})
        final = talk.until("transcript_final")
    assert (error["phase"], error["code"]) == ("stt", "internal_error")
    assert normalise(final["text"]) == "he could wait no longer"


async def test_a_description_that_raises_does_not_hold_the_requested_response_for_ever(models, tmp_path):
    """A response.create waits for the image before it; the failed description must release it."""
    faulty = FaultyModels(models)
    faulty.fail.add("vision")
    image = "data:image/png;base64," + base64.b64encode(text_png("OPEN")).decode()
    host = SessionHost(faulty, server_options(tmp_path / "db.sqlite3", **SHORT))
    with LiveServer(build_app(host)) as server:
        async with realtime(server.ws_url) as rt:
            await rt.configure(modalities=["text"])
            await rt.connection.conversation.item.create(item={
                "type": "message", "role": "user",
                "content": [{"type": "input_text", "text": "What does it say?"},
                            {"type": "input_image", "image_url": image}]})
            await rt.connection.response.create()
            error = await rt.until("error")
            done = await rt.until("response.done")
    assert (error["error"]["code"], error["error"]["type"]) == ("internal_error", "server_error")
    assert done["response"]["status"] in ("completed", "incomplete")


async def test_a_failed_response_is_marked_failed_on_the_openai_protocol_and_the_next_one_runs(models, tmp_path):
    faulty = FaultyModels(models)
    faulty.fail.add("llm")
    host = SessionHost(faulty, server_options(tmp_path / "db.sqlite3", **SHORT))
    with LiveServer(build_app(host)) as server:
        async with realtime(server.ws_url) as rt:
            await rt.configure(modalities=["text"])
            await rt.say("Say hello.")
            await rt.connection.response.create()
            failed = await rt.until("response.done")
            await rt.connection.response.create()
            second = await rt.until("response.done")
    assert failed["response"]["status"] == "failed"
    assert failed["response"]["status_details"]["error"]["code"] == "internal_error"
    assert second["response"]["status"] in ("completed", "incomplete")


def test_a_tool_step_that_raises_fails_its_response_and_leaves_no_pending_call(models, tmp_path):
    """An OpenAI-compatible server that reuses a call id: the store refuses the second one (ids are unique)."""
    faulty = FaultyModels(models)
    reused = ToolCall(id="call_reused", name="get_current_time", arguments='{"timezone": "UTC"}')
    faulty.tool_calls.extend([reused, reused])
    db = tmp_path / "db.sqlite3"
    with native(faulty, db) as client, client.websocket_connect("/ws") as ws:
        talk = Conversation(ws)
        session_id = start(talk)
        talk.send({"type": "user_message", "text": "What time is it?"})
        talk.until("tool_call_result")
        talk.until("llm_complete")
        talk.until("state_change", state="listening")
        talk.send({"type": "user_message", "text": "And now?"})
        error = talk.until("error")
        talk.until("state_change", state="listening")
        talk.send({"type": "user_message", "text": "Say hello."})
        answer = talk.until("llm_complete")
    assert (error["phase"], error["code"]) == ("tools", "internal_error")
    assert answer["fullText"].strip()
    rows = stored_rows(db, "tool_calls", session_id)
    assert [(r["call_id"], r["status"]) for r in rows] == [("call_reused", "ok")]


def test_barge_in_during_a_client_tool_call_stores_it_cancelled(models, tmp_path):
    faulty = FaultyModels(models)
    faulty.tool_calls.append(ToolCall(id="call_lamp", name="set_lamp", arguments='{"on": true}'))
    db = tmp_path / "db.sqlite3"
    with native(faulty, db) as client, client.websocket_connect("/ws") as ws:
        talk = Conversation(ws)
        session_id = start(talk, tools=[LAMP_TOOL])
        talk.send({"type": "user_message", "text": "Lamp on, please."})
        talk.until("tool_call_start", toolName="set_lamp")
        pending = stored_rows(db, "tool_calls", session_id)
        talk.send({"type": "interrupt"})
        talk.until("interrupted")
        talk.send({"type": "ping", "t": "after"})
        talk.until("pong")
    assert [r["status"] for r in pending] == ["pending"]
    row = stored_rows(db, "tool_calls", session_id)[0]
    assert (row["call_id"], row["status"]) == ("call_lamp", "cancelled")
    assert row["finished_at"] is not None


def test_a_disconnect_while_a_client_tool_call_waits_stores_it_cancelled(models, tmp_path):
    faulty = FaultyModels(models)
    faulty.tool_calls.append(ToolCall(id="call_lamp_2", name="set_lamp", arguments='{"on": false}'))
    db = tmp_path / "db.sqlite3"
    host = SessionHost(faulty, server_options(db, **SHORT))
    with LiveServer(build_app(host)) as server:
        with connect(f"{server.ws_url}/ws") as ws:
            ws.send(json.dumps({"type": "start_conversation", "config": {"tools": [LAMP_TOOL]}}))
            session_id = recv_until(ws, "session_started")["sessionId"]
            ws.send(json.dumps({"type": "user_message", "text": "Lamp off."}))
            recv_until(ws, "tool_call_start")
            session = host.sessions[session_id]
        server.on_loop(session.closed.wait(), timeout=30)
    row = stored_rows(db, "tool_calls", session_id)[0]
    assert (row["call_id"], row["status"]) == ("call_lamp_2", "cancelled")


def test_a_disconnect_while_the_final_transcript_is_in_flight_still_stores_it(models, tmp_path, clip_by_name):
    faulty = FaultyModels(models)
    faulty.delay_s["stt"] = 1.5  # a busy STT replica: the answer comes after the socket is gone
    db = tmp_path / "db.sqlite3"
    host = SessionHost(faulty, server_options(db, **SHORT))
    clip = clip_by_name("librispeech_1089-134691-0000.wav").pcm16()
    audio = np.concatenate([clip, np.zeros(16000 * 2, np.int16)])
    with LiveServer(build_app(host)) as server:
        with connect(f"{server.ws_url}/ws") as ws:
            ws.send(json.dumps({"type": "start_conversation"}))
            session_id = recv_until(ws, "session_started")["sessionId"]
            for start_at in range(0, audio.size, 1600):
                ws.send(audio[start_at:start_at + 1600].astype("<i2").tobytes())
            recv_until(ws, "speech_stopped")
            session = host.sessions[session_id]
        server.on_loop(session.closed.wait(), timeout=30)
    rows = stored_messages(db, session_id)
    assert [r["role"] for r in rows] == ["user"], rows  # stored, and not answered: nobody is listening
    assert normalise(rows[0]["content"]) == "he could wait no longer"


def test_a_disconnect_while_an_image_is_described_still_stores_the_description(models, tmp_path):
    faulty = FaultyModels(models)
    faulty.delay_s["vision"] = 1.0
    db = tmp_path / "db.sqlite3"
    host = SessionHost(faulty, server_options(db, **SHORT))
    with LiveServer(build_app(host)) as server:
        with connect(f"{server.ws_url}/ws") as ws:
            ws.send(json.dumps({"type": "start_conversation"}))
            session_id = recv_until(ws, "session_started")["sessionId"]
            session = host.sessions[session_id]
            image = base64.b64encode(text_png("EXIT")).decode()
            ws.send(json.dumps({"type": "upload_image", "image": image, "prompt": "What does the sign say?"}))
        server.on_loop(session.closed.wait(), timeout=30)
    images = stored_rows(db, "images", session_id)
    assert len(images) == 1 and "EXIT" in images[0]["description"].upper()
    notes = [r for r in stored_messages(db, session_id) if r["role"] == "system"]
    assert len(notes) == 1 and "EXIT" in notes[0]["content"].upper()


async def test_a_disconnect_cancels_a_deferred_openai_function_call(models, tmp_path):
    """On /v1/realtime a call ends the response and waits for function_call_output; the socket drops first."""
    faulty = FaultyModels(models)
    faulty.tool_calls.append(ToolCall(id="call_deferred", name="set_lamp", arguments='{"on": true}'))
    db = tmp_path / "db.sqlite3"
    host = SessionHost(faulty, server_options(db, **SHORT))
    tool = {"type": "function", "name": "set_lamp", "description": "the lamp",
            "parameters": LAMP_TOOL["function"]["parameters"]}
    with LiveServer(build_app(host)) as server:
        async with realtime(server.ws_url) as rt:
            await rt.configure(modalities=["text"], tools=[tool])
            await rt.say("Lamp on.")
            await rt.connection.response.create()
            await rt.until("response.done")
            (session,) = host.sessions.values()
            pending = [r["status"] for r in stored_rows(db, "tool_calls", session.session_id)]
        await asyncio.to_thread(server.on_loop, session.closed.wait(), 30)
    rows = stored_rows(db, "tool_calls", session.session_id)
    assert pending == ["pending"]  # waiting for the client's function_call_output
    assert [(r["call_id"], r["status"]) for r in rows] == [("call_deferred", "cancelled")]
