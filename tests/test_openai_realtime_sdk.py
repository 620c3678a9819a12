"""The OpenAI Realtime protocol, proven with the official `openai` SDK (GA `client.realtime` and beta
`client.beta.realtime`) against a real uvicorn server with the real models in-process.

Every event received is validated against the SDK's own pydantic server-event union and, for GA,
against Pipecat's known-event table (tests/realtime_harness.py). Tool calls here come from a scripted
Ollama; the embedded model's own are in tests/test_embedded_tool_use.py.
"""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from deployments.llm import LlmOptions
from serve_app.clients.in_process import InProcessModels
from serve_app.clients.turn_end import InProcessTurnEnd
from serve_app.host import SessionHost
from tests.drawn_text import text_png
from tests.fake_ollama import FakeReply
from tests.live_server import LiveServer
from tests.realtime_harness import assert_answered, realtime, to_24k, with_silence
from tests.session_harness import build_app, server_options, stored_messages
from tests.text_normalise import normalise

SHAPES = ["ga", "beta"]
WEATHER_TOOL = {"type": "function", "name": "get_weather", "description": "Get the current weather for a city.",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}




def live(models, db, smart_turn_model=None, **session) -> LiveServer:
    runner = InProcessTurnEnd(smart_turn_model) if smart_turn_model is not None else None
    return LiveServer(build_app(SessionHost(models, server_options(db, **session), runner)))


def with_ollama(models: InProcessModels, fake) -> InProcessModels:
    return models.with_llm(LlmOptions(backend="ollama", ollama_host=fake.url, ollama_model="llama3.2"))


@pytest.mark.parametrize("shape", SHAPES)
async def test_a_spoken_question_is_heard_transcribed_and_answered_in_speech(shape, models, smart_turn_model,
                                                                            tmp_path, clip_by_name):
    clip = to_24k(clip_by_name("librispeech_1089-134691-0000.wav").pcm16())  # "HE COULD WAIT NO LONGER"
    with live(models, tmp_path / "db.sqlite3", smart_turn_model, playback_lead_ms=60_000) as server:
        async with realtime(server.ws_url, shape) as rt:
            created = await rt.until("session.created")
            await rt.configure(turn_detection={"type": "server_vad", "silence_duration_ms": 500},
                               transcription={"model": "whisper-1"})
            await rt.append(with_silence(clip, 1.5))
            done = await rt.until("response.done")

    names = rt.names
    assert rt.types()[:2] == ["session.created", "conversation.created"]
    assert created["session"]["id"].startswith("sess_")
    order = ["input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped", "input_audio_buffer.committed",
             "conversation.item.input_audio_transcription.completed", "response.created",
             "response.output_item.added", "response.content_part.added", names["transcript_delta"],
             names["audio_delta"], names["transcript_done"], "response.content_part.done",
             "response.output_item.done", "response.done"]
    positions = [rt.index(kind) for kind in order]
    assert positions == sorted(positions), rt.types()

    user_item = rt.of("input_audio_buffer.committed")[0]["item_id"]
    assert rt.of("input_audio_buffer.speech_started")[0]["item_id"] == user_item
    transcription = rt.of("conversation.item.input_audio_transcription.completed")[0]
    assert transcription["item_id"] == user_item and transcription["usage"]["type"] == "duration"
    assert normalise(transcription["transcript"]) == "he could wait no longer"

    assert_answered(done)
    reply = done["response"]["output"][0]
    transcript = "".join(e["delta"] for e in rt.of(names["transcript_delta"]))
    assert transcript and reply["content"][0]["transcript"] == transcript
    assert reply["content"][0]["type"] == names["audio_part"] and reply["role"] == "assistant"
    samples = np.frombuffer(rt.audio(), dtype="<i2")
    assert samples.size > 24000 * 0.5 and np.sqrt(np.mean((samples / 32768) ** 2)) > 0.01


@pytest.mark.parametrize("shape", SHAPES)
async def test_a_text_turn_answers_in_text_and_echoes_metadata(shape, models, tmp_path):
    with live(models, tmp_path / "db.sqlite3") as server:
        async with realtime(server.ws_url, shape) as rt:
            await rt.configure(modalities=["text"], instructions="Answer in one short sentence.")
            await rt.say("Say hello to me.")
            await rt.connection.response.create(response={"metadata": {"client_event_id": "turn-1"}})
            created = await rt.until("response.created")
            done = await rt.until("response.done")

    names = rt.names
    assert created["response"]["metadata"] == {"client_event_id": "turn-1"}
    assert done["response"]["metadata"] == {"client_event_id": "turn-1"}
    text = "".join(e["delta"] for e in rt.of(names["text_delta"]))
    assert text and rt.of(names["text_done"])[0]["text"] == text
    assert not rt.of(names["audio_delta"])
    assert done["response"]["output"][0]["content"] == [{"type": names["text_part"], "text": text}]
    usage = done["response"]["usage"]
    assert usage["input_tokens"] > 0 and usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]


@pytest.mark.parametrize("shape", SHAPES)
async def test_function_call_round_trip(shape, models, fake_ollama, tmp_path):
    fake_ollama.script(FakeReply(tool_calls=[{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]),
                       FakeReply(content="It is sunny and 21 degrees in Paris."))
    with live(with_ollama(models, fake_ollama), tmp_path / "db.sqlite3", playback_lead_ms=60_000) as server:
        async with realtime(server.ws_url, shape) as rt:
            await rt.configure(tools=[WEATHER_TOOL])
            await rt.say("What is the weather in Paris?")
            await rt.connection.response.create()
            first = await rt.until("response.done")
            call = first["response"]["output"][0]
            await rt.connection.conversation.item.create(item={
                "type": "function_call_output", "call_id": call["call_id"],
                "output": json.dumps({"temp_c": 21, "sky": "sunny"})})
            output_item = (await rt.until(rt.names["item_added"]))["item"]
            await rt.connection.response.create()
            second = await rt.until("response.done")

    assert first["response"]["status"] == "completed"
    assert call["type"] == "function_call" and call["name"] == "get_weather"
    assert json.loads(call["arguments"]) == {"city": "Paris"}
    arguments_done = rt.of("response.function_call_arguments.done")[0]
    assert arguments_done["call_id"] == call["call_id"] and json.loads(arguments_done["arguments"]) == {"city": "Paris"}
    assert arguments_done.get("name") == ("get_weather" if shape == "ga" else None)
    assert "".join(e["delta"] for e in rt.of("response.function_call_arguments.delta")) == call["arguments"]

    assert output_item["type"] == "function_call_output" and output_item["call_id"] == call["call_id"]
    assert second["response"]["status"] == "completed"
    spoken = second["response"]["output"][0]["content"][0]["transcript"]
    assert spoken == "It is sunny and 21 degrees in Paris."
    assert len(rt.audio()) > 24000  # the answer was spoken
    # the second LLM request carried the call and the client's result
    messages = fake_ollama.requests[1]["messages"]
    assert any(m["role"] == "assistant" and m.get("tool_calls") for m in messages)
    assert any(m["role"] == "tool" and json.loads(m["content"]) == {"temp_c": 21, "sky": "sunny"} for m in messages)
    assert fake_ollama.requests[0]["tools"][0]["function"]["name"] == "get_weather"
    assert len(fake_ollama.requests[0]["tools"]) == 1  # only the client's tools: the server's own are not offered


@pytest.mark.parametrize("shape", SHAPES)
async def test_barge_in_cancels_the_reply_and_truncate_cuts_it_to_what_was_heard(shape, models, smart_turn_model,
                                                                                tmp_path, clip_by_name):
    interruption = to_24k(clip_by_name("jfk_inaugural_ask_not.wav").pcm16())
    db = tmp_path / "db.sqlite3"
    with live(models, db, smart_turn_model, playback_lead_ms=300, spoken_reply_tokens=80) as server:
        async with realtime(server.ws_url, shape) as rt:
            await rt.configure(instructions="Tell a long story about the sea. Never stop early.")
            await rt.say("Please tell me a long story about a ship at sea.")
            await rt.connection.response.create()
            reply_id = (await rt.until("response.output_item.added"))["item"]["id"]
            while len(rt.audio()) < 24000 * 2 * 1.0:  # a second of the answer has arrived
                await rt.until(rt.names["audio_delta"])
            await rt.append(with_silence(interruption[: 24000 * 3], 0.5))
            await rt.until("input_audio_buffer.speech_started")
            cancelled = await rt.until("response.done")
            await rt.connection.conversation.item.truncate(item_id=reply_id, content_index=0, audio_end_ms=700)
            truncated = await rt.until("conversation.item.truncated")
            await rt.connection.conversation.item.retrieve(item_id=reply_id)
            retrieved = await rt.until("conversation.item.retrieved")
            # a client that overshoots (rounding, wall clock) is clamped, not refused
            await rt.connection.conversation.item.truncate(item_id=reply_id, content_index=0, audio_end_ms=10**7)
            clamped = await rt.until("conversation.item.truncated")

    assert cancelled["response"]["status"] == "cancelled"
    assert cancelled["response"]["status_details"]["reason"] == "turn_detected"
    assert cancelled["response"]["output"][0]["status"] == "incomplete"
    assert truncated["item_id"] == reply_id and truncated["audio_end_ms"] == 700
    sent_ms = len(rt.audio()) / 2 / 24000 * 1000
    assert clamped["audio_end_ms"] <= sent_ms + 1
    full = rt.of(rt.names["transcript_done"])[0]["transcript"]
    heard = retrieved["item"]["content"][0]["transcript"]
    assert len(heard) < len(full.strip()) and full.strip().startswith(heard)
    rows = [r for r in stored_messages(db, _session_id(db)) if r["role"] == "assistant"]
    assert rows[0]["status"] == "interrupted" and rows[0]["full_content"]
    assert len(rows[0]["content"]) < len(rows[0]["full_content"])


@pytest.mark.parametrize("shape", SHAPES)
async def test_an_image_question_reaches_the_model_through_the_vision_service(shape, models, fake_ollama, tmp_path):
    fake_ollama.script(FakeReply(content="The sign says open sesame."))
    image = base64.b64encode(text_png("OPEN SESAME")).decode()
    with live(with_ollama(models, fake_ollama), tmp_path / "db.sqlite3", playback_lead_ms=60_000) as server:
        async with realtime(server.ws_url, shape) as rt:
            await rt.configure(modalities=["text"])
            await rt.connection.conversation.item.create(item={
                "type": "message", "role": "user",
                "content": [{"type": "input_image", "image_url": "data:image/png;base64," + image, "detail": "auto"},
                            {"type": "input_text", "text": "What does the sign say?"}]})
            added = await rt.until(rt.names["item_added"])
            await rt.connection.response.create()
            done = await rt.until("response.done")

    assert done["response"]["status"] == "completed"
    assert done["response"]["output"][0]["content"][0]["text"] == "The sign says open sesame."
    parts = [p["type"] for p in added["item"]["content"]]
    assert parts == (["input_image", "input_text"] if shape == "ga" else ["input_text"])  # beta has no images
    messages = fake_ollama.requests[0]["messages"]
    assert any(m["role"] == "system" and "OPEN SESAME" in m["content"].upper() for m in messages)
    assert any(m["role"] == "user" and m["content"] == "What does the sign say?" for m in messages)


def _session_id(db) -> str:
    import sqlite3

    with sqlite3.connect(db) as connection:
        return connection.execute("SELECT id FROM sessions ORDER BY created_at DESC LIMIT 1").fetchone()[0]
