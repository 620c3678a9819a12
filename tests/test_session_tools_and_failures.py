"""Tool rounds and model-service failures in a session, with the LLM served by a (fake) Ollama.

Parallel and chained calls are more than the embedded SmolLM2-135M makes (it decides one call per
turn: tests/test_embedded_tool_use.py), so these tool loops are driven by scripted Ollama replies at
its HTTP boundary: the only fake the project allows.
"""

from __future__ import annotations

import json

from starlette.testclient import TestClient

from deployments.llm import LlmOptions
from deployments.stt import SttOptions
from deployments.turn_end import DEFAULT_MODEL_PATH as SMART_TURN_ONNX
from deployments.vad import VadOptions
from serve_app.host import SessionHost
from tests.fake_ollama import FakeReply
from tests.session_harness import Conversation, build_app, server_options, stored_rows
from tests.text_normalise import normalise


def ollama_client(models, fake_ollama, tmp_path):
    models = models.with_llm(LlmOptions(backend="ollama", ollama_host=fake_ollama.url, ollama_model="llama3.2"))
    host = SessionHost(models, server_options(tmp_path / "db.sqlite3", playback_lead_ms=60_000))
    return TestClient(build_app(host))


LAMP_TOOL = {"type": "function", "function": {
    "name": "set_lamp", "description": "Turn the living room lamp on or off",
    "parameters": {"type": "object", "properties": {"on": {"type": "boolean"}}, "required": ["on"]}}}


def test_parallel_builtin_tools_then_a_client_tool_then_the_answer(models, fake_ollama, tmp_path):
    fake_ollama.script(
        FakeReply(tool_calls=[
            {"function": {"name": "calculator", "arguments": {"expression": "12 * 7"}}},
            {"function": {"name": "get_current_time", "arguments": {"timezone": "Europe/Paris"}}},
        ]),
        FakeReply(tool_calls=[{"function": {"name": "set_lamp", "arguments": {"on": True}}}]),
        FakeReply(content="Twelve times seven is 84, and the lamp is on."),
    )
    with ollama_client(models, fake_ollama, tmp_path) as client, client.websocket_connect("/ws") as ws:
        talk = Conversation(ws)
        talk.send({"type": "start_conversation", "config": {"tools": [LAMP_TOOL]}})
        session_id = talk.until("session_started")["sessionId"]
        talk.send({"type": "user_message", "text": "What is 12 times 7, what time is it in Paris, and lamp on."})
        lamp = talk.until("tool_call_start", toolName="set_lamp")
        talk.send({"type": "tool_result", "callId": lamp["callId"], "result": {"ok": True}})
        complete = talk.until("llm_complete")
        talk.until("audio_complete")

    events = [f for f in talk.frames if isinstance(f, dict)]
    starts = [e for e in events if e["type"] == "tool_call_start"]
    results = {e["toolName"]: e for e in events if e["type"] == "tool_call_result"}
    assert [s["toolName"] for s in starts] == ["calculator", "get_current_time", "set_lamp"]
    assert results["calculator"]["result"]["result"] == 84
    assert results["get_current_time"]["result"]["timezone"] == "Europe/Paris"
    assert results["set_lamp"]["result"] == {"ok": True}
    assert complete["fullText"] == "Twelve times seven is 84, and the lamp is on."

    # the chained rounds carried the tool results back to the model
    second, third = fake_ollama.requests[1]["messages"], fake_ollama.requests[2]["messages"]
    tool_messages = [m for m in second if m["role"] == "tool"]
    assert len(tool_messages) == 2 and json.loads(tool_messages[0]["content"])["result"] == 84
    assert any(m["role"] == "tool" and json.loads(m["content"]) == {"ok": True} for m in third)
    assert {t["function"]["name"] for t in fake_ollama.requests[0]["tools"]} >= {"calculator", "set_lamp"}

    rows = stored_rows(tmp_path / "db.sqlite3", "tool_calls", session_id)
    assert [(r["name"], r["status"]) for r in rows] == [("calculator", "ok"), ("get_current_time", "ok"),
                                                        ("set_lamp", "ok")]


def test_weather_without_a_configured_service_is_a_clear_tool_error(models, fake_ollama, tmp_path):
    fake_ollama.script(FakeReply(tool_calls=[{"function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}]),
                       FakeReply(content="I cannot check the weather here."))
    with ollama_client(models, fake_ollama, tmp_path) as client, client.websocket_connect("/ws") as ws:
        talk = Conversation(ws)
        talk.send({"type": "start_conversation"})
        talk.send({"type": "user_message", "text": "Weather in Oslo?"})
        result = talk.until("tool_call_result")
        talk.until("llm_complete")
    assert "not configured" in result["result"]["error"]


def test_llm_failure_is_an_error_event_and_retry_turn_answers_the_same_question(models, fake_ollama,
                                                                                tmp_path):
    fake_ollama.script(FakeReply(status=500, error="model runner crashed"), FakeReply(content="Second time lucky."))
    with ollama_client(models, fake_ollama, tmp_path) as client, client.websocket_connect("/ws") as ws:
        talk = Conversation(ws)
        talk.send({"type": "start_conversation"})
        talk.send({"type": "user_message", "text": "Are you there?"})
        error = talk.until("error")
        talk.until("state_change", state="listening")
        talk.send({"type": "retry_turn"})
        complete = talk.until("llm_complete")
    assert error["phase"] == "llm" and error["code"] == "service_unavailable"
    assert complete["fullText"] == "Second time lucky."
    asked = [r["messages"][-1]["content"] for r in fake_ollama.requests]
    assert asked == ["Are you there?", "Are you there?"]


def test_unreachable_llm_server_is_an_error_and_the_session_survives(models, tmp_path):
    models = models.with_llm(LlmOptions(backend="ollama", ollama_host="http://127.0.0.1:9"))
    host = SessionHost(models, server_options(tmp_path / "db.sqlite3"))
    with TestClient(build_app(host)) as client, client.websocket_connect("/ws") as ws:
        talk = Conversation(ws)
        talk.send({"type": "start_conversation"})
        talk.send({"type": "user_message", "text": "Hello?"})
        error = talk.until("error")
        talk.send({"type": "ping", "t": "still here"})
        pong = talk.until("pong")
    assert error["phase"] == "llm" and "127.0.0.1:9" in error["message"]
    assert pong["t"] == "still here"


def test_tts_failing_on_every_sentence_leaves_a_text_answer(models, tmp_path):
    """TTS down -> text only: the real Piper service refuses every sentence (a voice it does not have)."""
    host = SessionHost(models, server_options(tmp_path / "db.sqlite3", playback_lead_ms=60_000))
    with TestClient(build_app(host)) as client, client.websocket_connect("/ws") as ws:
        talk = Conversation(ws)
        talk.send({"type": "start_conversation", "config": {"voice": "nobody-at-all"}})
        talk.until("state_change", state="listening")
        talk.send({"type": "user_message", "text": "Say hello to me."})
        error = talk.until("error")
        complete = talk.until("llm_complete")
        talk.until("state_change", state="listening")
        talk.send({"type": "ping", "t": "after"})
        talk.until("pong")
    assert error["phase"] == "tts" and error["code"] == "unknown_voice"
    assert "continuing without audio" in error["message"]
    assert complete["fullText"].strip()
    assert not any(isinstance(f, bytes) or f["type"] == "audio_chunk" for f in talk.frames)
    assert talk.types().count("error") == 1  # said once, not once per sentence
    rows = stored_rows(tmp_path / "db.sqlite3", "messages", talk.frames[0]["sessionId"])
    assert [r["role"] for r in rows] == ["user", "assistant"] and rows[1]["content"] == complete["fullText"]


def test_vad_down_falls_back_to_energy_and_fixed_silence(models, tmp_path, clip_by_name):
    """VAD down -> energy and fixed-silence endpointing: the VAD service is given a model it cannot run."""
    broken = models.with_vad(VadOptions(model_path=str(SMART_TURN_ONNX)))  # loads, then fails on every call
    host = SessionHost(broken, server_options(tmp_path / "db.sqlite3", playback_lead_ms=60_000))
    with TestClient(build_app(host)) as client, client.websocket_connect("/ws") as ws:
        talk = Conversation(ws)
        talk.send({"type": "start_conversation"})
        talk.until("state_change", state="listening")
        talk.speak(clip_by_name("librispeech_1089-134691-0000.wav").pcm16())
        error = talk.until("error")
        final = talk.until("transcript_final")
        talk.until("llm_complete")
    assert error["phase"] == "vad" and error["code"] == "service_unavailable"
    assert normalise(final["text"]) == "he could wait no longer"
    assert talk.types().index("speech_started") < talk.types().index("transcript_final")
    assert talk.types().count("error") == 1


def test_retry_turn_after_a_failed_speculative_transcript_retries_the_same_audio(models, smart_turn_model, tmp_path,
                                                                                  clip_by_name):
    """The STT refuses utterances over 1 s: the speculative transcript of a 2 s question fails, and
    retry_turn must send the same 2 s again (it once sent an empty slice, which 'succeeded')."""
    from serve_app.clients.turn_end import InProcessTurnEnd

    strict = models.with_stt(SttOptions(max_audio_s=1.0))
    host = SessionHost(strict, server_options(tmp_path / "db.sqlite3"), InProcessTurnEnd(smart_turn_model))
    with TestClient(build_app(host)) as client, client.websocket_connect("/ws") as ws:
        talk = Conversation(ws)
        talk.send({"type": "start_conversation"})
        talk.until("state_change", state="listening")
        talk.speak(clip_by_name("librispeech_1089-134691-0000.wav").pcm16())  # 2.1 s
        first = talk.until("error")
        talk.until("state_change", state="listening")
        talk.send({"type": "retry_turn"})
        talk.until("state_change", state="transcribing")
        again = talk.until("error")
    assert (first["phase"], first["code"]) == ("stt", "audio_too_long")
    assert "retry_turn" in first["message"]
    assert (again["phase"], again["code"]) == ("stt", "audio_too_long")
    assert "transcript_final" not in talk.types()
