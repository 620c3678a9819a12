"""The OpenAI Realtime protocol's edges: session merging, manual turns, G.711, errors that keep the
socket open, item operations on the LLM context, auth and subprotocols, and the event set."""

from __future__ import annotations

import audioop
import base64
import json

import numpy as np
import pytest
import soxr
from websockets.asyncio.client import connect as ws_connect

from deployments.llm import LlmOptions
from serve_app.host import SessionHost
from serve_app.protocols.openai_realtime.audio import MAX_DELTA_BYTES, delta_pieces, from_pcm16, to_pcm16
from serve_app.protocols.openai_realtime.errors import ProtocolError
from serve_app.protocols.openai_realtime.server_events import SERVER_EVENT_TYPES
from serve_app.protocols.openai_realtime.session_config import RealtimeSession, engine_settings, updated
from serve_app.session.options import TurnDetectionOptions
from tests.fake_ollama import FakeReply
from tests.live_server import LiveServer
from tests.realtime_harness import (
    BETA_EVENTS,
    GA_EVENTS,
    PIPECAT_SERVER_EVENT_TYPES,
    assert_answered,
    realtime,
)
from tests.session_harness import build_app, server_options
from tests.text_normalise import normalise


def live(models, db, **options) -> LiveServer:
    api_keys = options.pop("api_keys", [])
    server = server_options(db, **options).model_copy(update={"api_keys": api_keys})
    return LiveServer(build_app(SessionHost(models, server)))


def test_every_event_type_the_server_can_send_is_in_pipecats_table():
    assert SERVER_EVENT_TYPES <= PIPECAT_SERVER_EVENT_TYPES, SERVER_EVENT_TYPES - PIPECAT_SERVER_EVENT_TYPES


def test_session_update_deep_merges_and_a_new_turn_detection_type_starts_from_its_defaults():
    session = RealtimeSession()
    session = updated(session, {"type": "realtime", "audio": {"input": {"turn_detection": {"threshold": 0.7}}}})
    session = updated(session, {"audio": {"input": {"turn_detection": {"silence_duration_ms": 800}}}})
    vad = session.audio.input.turn_detection
    assert (vad.type, vad.threshold, vad.silence_duration_ms, vad.prefix_padding_ms) == ("server_vad", 0.7, 800, 300)
    session = updated(session, {"instructions": "Be terse.", "unknown_field": 1})
    assert session.instructions == "Be terse." and session.audio.input.turn_detection.threshold == 0.7
    session = updated(session, {"audio": {"input": {"turn_detection": {"type": "semantic_vad", "eagerness": "high"}}}})
    assert session.audio.input.turn_detection.model_dump() == {
        "type": "semantic_vad", "eagerness": "high", "create_response": True, "interrupt_response": True}
    session = updated(session, {"audio": {"input": {"turn_detection": None}}})
    assert session.audio.input.turn_detection is None
    with pytest.raises(ProtocolError) as bad:
        updated(session, {"audio": {"input": {"turn_detection": {"type": "server_vad", "threshold": 3}}}})
    assert bad.value.code == "invalid_value" and "threshold" in bad.value.param


def test_turn_detection_maps_onto_the_engine():
    defaults = TurnDetectionOptions()
    server_vad = updated(RealtimeSession(), {"audio": {"input": {"turn_detection": {
        "type": "server_vad", "threshold": 0.6, "silence_duration_ms": 700, "create_response": False}}}})
    turns = engine_settings(server_vad, defaults).turns
    assert not turns.manual and not turns.auto_respond and turns.interrupt
    assert (turns.detection.threshold, turns.detection.min_silence_ms, turns.detection.smart_turn) == (0.6, 700, False)
    for eagerness, threshold, wait_ms in [("high", 0.3, 2000), ("auto", 0.5, 4000), ("low", 0.7, 8000)]:
        semantic = updated(RealtimeSession(), {"audio": {"input": {"turn_detection": {
            "type": "semantic_vad", "eagerness": eagerness}}}})
        detection = engine_settings(semantic, defaults).turns.detection
        assert (detection.smart_turn, detection.smart_turn_threshold, detection.max_silence_ms) == (True, threshold,
                                                                                                     wait_ms)
    manual = engine_settings(updated(RealtimeSession(), {"audio": {"input": {"turn_detection": None}}}), defaults)
    assert manual.turns.manual and not manual.turns.auto_respond
    text = engine_settings(updated(RealtimeSession(), {"output_modalities": ["text"], "tools": [
        {"type": "function", "name": "f", "parameters": {"type": "object", "properties": {}}}]}), defaults)
    assert text.replies.speak is False and text.replies.end_on_client_tool and not text.replies.builtin_tools
    assert text.config["tools"][0]["function"]["name"] == "f"


def test_g711_round_trips_and_audio_deltas_stay_small():
    pcm = (np.sin(np.arange(8000) / 8) * 8000).astype("<i2").tobytes()
    for fmt in ("audio/pcmu", "audio/pcma"):
        wire = from_pcm16(pcm, fmt)
        assert len(wire) == len(pcm) // 2
        back = np.frombuffer(to_pcm16(wire, fmt), dtype="<i2").astype(float)
        assert np.abs(back - np.frombuffer(pcm, dtype="<i2")).max() < 300  # companding error only
    ten_seconds = b"\x01\x00" * 24000 * 10
    pieces = list(delta_pieces(ten_seconds))
    assert len(pieces) == -(-len(ten_seconds) // MAX_DELTA_BYTES)
    assert all(len(json.dumps({"type": "response.output_audio.delta", "delta": p})) < 300_000 for p in pieces)
    assert b"".join(base64.b64decode(p) for p in pieces) == ten_seconds


async def test_manual_turns_in_g711_ulaw(models, tmp_path, clip_by_name):
    clip = clip_by_name("voice2json_turn_on_living_room_lamp.wav").pcm16()
    at_8k = (soxr.resample(clip.astype(np.float32) / 32768, 16000, 8000) * 32767).astype("<i2").tobytes()
    ulaw = audioop.lin2ulaw(at_8k + b"\x00\x00" * 4000, 2)
    with live(models, tmp_path / "db.sqlite3", playback_lead_ms=60_000) as server:
        async with realtime(server.ws_url) as rt:
            session = await rt.configure(turn_detection=None, audio_format="audio/pcmu")
            await rt.connection.input_audio_buffer.commit()
            empty = await rt.until("error")
            for start in range(0, len(ulaw), 800):  # 100 ms of 8 kHz µ-law
                await rt.connection.input_audio_buffer.append(audio=base64.b64encode(ulaw[start:start + 800]).decode())
            await rt.connection.input_audio_buffer.commit()
            committed = await rt.until("input_audio_buffer.committed")
            await rt.connection.response.create()
            transcribed = await rt.until("conversation.item.input_audio_transcription.completed")
            done = await rt.until("response.done")

    assert session["session"]["audio"]["input"]["turn_detection"] is None
    assert session["session"]["audio"]["output"]["format"] == {"type": "audio/pcmu"}
    assert empty["error"]["code"] == "input_audio_buffer_commit_empty"
    assert not rt.of("input_audio_buffer.speech_started")  # no VAD turns in manual mode
    assert transcribed["item_id"] == committed["item_id"]
    assert normalise(transcribed["transcript"]) == "turn on the living room lamp"
    assert rt.index("conversation.item.input_audio_transcription.completed") < rt.index("response.created")
    assert_answered(done)
    assert done["response"]["audio"]["output"]["format"] == {"type": "audio/pcmu"}
    reply = np.frombuffer(audioop.ulaw2lin(rt.audio(), 2), dtype="<i2")  # one byte per 8 kHz sample
    assert reply.size > 8000 * 0.5 and np.sqrt(np.mean((reply / 32768) ** 2)) > 0.01


async def test_errors_carry_the_event_id_and_never_close_the_socket(models, fake_ollama, tmp_path):
    fake_ollama.script(FakeReply(content="One. " * 40, chunks=40))
    llm = models.with_llm(LlmOptions(backend="ollama", ollama_host=fake_ollama.url, ollama_model="llama3.2"))
    with live(llm, tmp_path / "db.sqlite3", playback_lead_ms=60_000) as server:
        async with realtime(server.ws_url) as rt:
            await rt.until("conversation.created")
            send = rt.connection.send_raw
            await send("{not json")
            bad_json = await rt.until("error")
            await send(json.dumps({"type": "dance", "event_id": "evt_1"}))
            unknown = await rt.until("error")
            await send(json.dumps({"type": "response.cancel", "event_id": "evt_2"}))
            not_active = await rt.until("error")
            await send(json.dumps({"type": "conversation.item.retrieve", "item_id": "item_nope", "event_id": "evt_3"}))
            not_found = await rt.until("error")
            await send(json.dumps({"type": "session.update", "event_id": "evt_4",
                                   "session": {"type": "realtime", "output_modalities": ["text"],
                                               "audio": {"input": {"turn_detection": {"threshold": 3}}}}}))
            invalid = await rt.until("error")
            await rt.say("Count for me.")
            user_item = (await rt.until("conversation.item.added"))["item"]["id"]
            await send(json.dumps({"type": "conversation.item.truncate", "item_id": user_item, "content_index": 0,
                                   "audio_end_ms": 10, "event_id": "evt_5"}))
            not_audio = await rt.until("error")
            await send(json.dumps({"type": "response.create", "event_id": "evt_6"}))
            await send(json.dumps({"type": "response.create", "event_id": "evt_7"}))
            busy = await rt.until("error")
            await rt.until("response.done")
            await send(json.dumps({"type": "session.update", "session": {"type": "realtime", "instructions": "ok"}}))
            still_open = await rt.until("session.updated")

    codes = [(e["error"]["code"], e["error"]["event_id"]) for e in (bad_json, unknown, not_active, not_found, invalid,
                                                                    not_audio, busy)]
    assert codes == [("invalid_json", None), ("invalid_event_type", "evt_1"), ("response_cancel_not_active", "evt_2"),
                     ("item_not_found", "evt_3"), ("invalid_value", "evt_4"), ("unsupported_content_type", "evt_5"),
                     ("conversation_already_has_active_response", "evt_7")]
    assert "threshold" in invalid["error"]["param"]
    assert still_open["session"]["instructions"] == "ok"
    assert still_open["session"]["output_modalities"] == ["audio"]  # the invalid update changed nothing


async def test_created_deleted_and_root_items_shape_what_the_model_sees(models, fake_ollama, tmp_path):
    fake_ollama.script(FakeReply(content="Noted."))
    llm = models.with_llm(LlmOptions(backend="ollama", ollama_host=fake_ollama.url, ollama_model="llama3.2"))
    with live(llm, tmp_path / "db.sqlite3") as server:
        async with realtime(server.ws_url) as rt:
            await rt.configure(modalities=["text"])
            await rt.say("Forget this sentence.")
            forgotten = (await rt.until("conversation.item.added"))["item"]["id"]
            await rt.say("Remember this one.")
            kept = await rt.until("conversation.item.added")
            await rt.connection.conversation.item.create(
                previous_item_id="root",
                item={"type": "message", "role": "system", "content": [{"type": "input_text", "text": "History:"}]})
            root = await rt.until("conversation.item.added")
            await rt.connection.conversation.item.delete(item_id=forgotten)
            deleted = await rt.until("conversation.item.deleted")
            await rt.connection.response.create()
            await rt.until("response.done")
            await rt.connection.conversation.item.retrieve(item_id=forgotten)
            gone = await rt.until("error")

    assert kept["previous_item_id"] == forgotten and root["previous_item_id"] is None
    assert deleted["item_id"] == forgotten and gone["error"]["code"] == "item_not_found"
    said = [(m["role"], m["content"]) for m in fake_ollama.requests[0]["messages"]][1:]  # after the system prompt
    assert said == [("system", "History:"), ("user", "Remember this one.")]


async def test_api_keys_bearer_and_browser_subprotocols(models, tmp_path):
    with live(models, tmp_path / "db.sqlite3", api_keys=["s3cret"]) as server:
        async with realtime(server.ws_url, api_key="wrong") as rt:
            refused = await rt.recv()
            with pytest.raises(Exception) as closed:
                await rt.recv()
        async with realtime(server.ws_url, api_key="s3cret") as rt:
            accepted = await rt.recv()
        browser = ["realtime", "openai-insecure-api-key.s3cret", "openai-beta.realtime-v1"]
        async with ws_connect(f"{server.ws_url}/v1/realtime?model=x", subprotocols=browser) as ws:
            selected = ws.subprotocol
            beta_created = json.loads(await ws.recv())

    assert refused["type"] == "error" and refused["error"]["code"] == "invalid_api_key"
    assert getattr(closed.value, "rcvd", None) is not None and closed.value.rcvd.code == 1008
    assert accepted["type"] == "session.created" and accepted["session"]["type"] == "realtime"
    assert accepted["session"]["model"] == "openrealtime-local"
    GA_EVENTS.validate_python(accepted)
    assert selected == "realtime"
    BETA_EVENTS.validate_python(beta_created)
    assert beta_created["session"]["input_audio_format"] == "pcm16" and "audio" not in beta_created["session"]


def test_items_carry_the_fields_openai_always_sends_even_when_null():
    """The JS Agents SDK's history schema requires ``transcript`` on an audio part (null until
    transcribed); it threw from its socket listener on our first voice turn when the key was left out."""
    from serve_app.protocols.openai_realtime.items import function_call_item, user_audio_item

    assert user_audio_item("item_1").wire() == {"id": "item_1", "object": "realtime.item", "type": "message",
                                                "status": "completed", "role": "user",
                                                "content": [{"type": "input_audio", "transcript": None}]}
    call = function_call_item("item_2", "call_1", "get_weather", "", "in_progress").wire()
    assert call == {"id": "item_2", "object": "realtime.item", "type": "function_call", "status": "in_progress",
                    "call_id": "call_1", "name": "get_weather", "arguments": ""}
    GA_EVENTS.validate_python({"type": "conversation.item.added", "event_id": "e", "previous_item_id": None,
                               "item": user_audio_item("item_1").wire()})
