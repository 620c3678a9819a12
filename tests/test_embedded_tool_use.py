"""Tool use on the embedded models with the default embedding decision, end to end: no scripted replies,
the real sentence-embedding router decides (deployments/tool_router.py, ``tool_decision: embedding``),
the real SmolLM2-135M writes the call, the real STT hears the question, the real TTS speaks the answer. Driven only through the
public sockets (native `/ws`, OpenAI SDK).
"""

from __future__ import annotations

import asyncio
import base64
import json

import numpy as np
import pytest
from starlette.testclient import TestClient

from deployments.llm import LlmOptions
from deployments.tts import SynthesisRequest
from serve_app.clients.turn_end import InProcessTurnEnd
from serve_app.host import SessionHost
from tests.live_server import LiveServer
from tests.realtime_harness import realtime
from tests.session_harness import Conversation, build_app, server_options, stored_rows
from tests.text_normalise import normalise

TIME_QUESTION = "Can you tell me the current time in New York?"
ORDER_TOOL = {"type": "function", "name": "lookup_order",
              "description": "Look up a customer's order by its order number: status, items and delivery date.",
              "parameters": {"type": "object",
                             "properties": {"order_id": {"type": "string", "description": "the order number"}},
                             "required": ["order_id"]}}


@pytest.fixture(scope="module")
def routed(models):
    """The shared embedded models, a sentence-embedding router deciding on tools (deployments/tool_router.py)."""
    return models.with_llm(LlmOptions(tool_decision="embedding"))


def spoken(models, text: str) -> np.ndarray:
    """``text`` said by the embedded Piper voice, as 16 kHz PCM16 (what a microphone would send)."""
    async def synthesise() -> bytes:
        request = SynthesisRequest(text=text, sample_rate=16000)
        return b"".join([chunk async for chunk in models.synthesize(request)])

    return np.frombuffer(asyncio.run(synthesise()), dtype="<i2")


def test_a_spoken_request_for_the_time_gets_the_tool_card_and_a_spoken_answer_from_its_result(
        routed, smart_turn_model, tmp_path):
    question = spoken(routed, TIME_QUESTION)
    # greedy replies: the answer's wording is then the same on every run
    host = SessionHost(routed, server_options(tmp_path / "db.sqlite3", playback_lead_ms=60_000, temperature=0.0),
                       InProcessTurnEnd(smart_turn_model))
    with TestClient(build_app(host)) as client, client.websocket_connect("/ws") as ws:
        talk = Conversation(ws)
        talk.send({"type": "start_conversation"})
        session_id = talk.until("session_started")["sessionId"]
        talk.until("state_change", state="listening")
        talk.speak(question)
        final = talk.until("transcript_final")
        card = talk.until("tool_call_start")
        result = talk.until("tool_call_result")
        complete = talk.until("llm_complete")
        talk.until("audio_complete")

    assert "current time" in normalise(final["text"])
    assert card["toolName"] == "get_current_time" and result["callId"] == card["callId"]
    assert result["result"]["timezone"] and result["result"]["spoken"]
    types = talk.types()
    assert types.index("tool_call_result") < types.index("llm_token") < types.index("audio_chunk")

    # The answer is spoken after the result came back. Whether SmolLM2-135M actually reads the time off
    # the result is not asserted: on one run it did, on the next it wrote Python instead (issue 13 stays
    # open on exactly this; a bigger model is the README's advice).
    assert complete["fullText"].strip()
    audio = b"".join(base64.b64decode(f["audio"]) for f in talk.frames
                     if isinstance(f, dict) and f["type"] == "audio_chunk")
    assert np.frombuffer(audio, dtype="<i2").size > 24000 * 0.5
    rows = stored_rows(tmp_path / "db.sqlite3", "tool_calls", session_id)
    assert [(r["name"], r["status"]) for r in rows] == [("get_current_time", "ok")]


async def test_a_client_declared_tool_round_trip_through_the_openai_sdk(routed, tmp_path):
    app = build_app(SessionHost(routed, server_options(tmp_path / "db.sqlite3", playback_lead_ms=60_000)))
    with LiveServer(app) as server:
        async with realtime(server.ws_url, "ga") as rt:
            await rt.configure(tools=[ORDER_TOOL])
            await rt.say("Look up order number 4417 for me with the lookup_order tool")
            await rt.connection.response.create()
            first = await rt.until("response.done")
            call = first["response"]["output"][0]
            await rt.connection.conversation.item.create(item={
                "type": "function_call_output", "call_id": call["call_id"],
                "output": json.dumps({"order_id": "4417", "status": "shipped", "arrives": "Thursday"})})
            await rt.connection.response.create()
            second = await rt.until("response.done")

    assert first["response"]["status"] == "completed"
    assert call["type"] == "function_call" and call["name"] == "lookup_order"
    # schema-valid arguments; the value itself SmolLM2-135M copies only sometimes (bench/tool_choice.py,
    # "args as asked"), so it is not pinned here
    arguments = json.loads(call["arguments"])
    assert list(arguments) == ["order_id"] and isinstance(arguments["order_id"], str)
    arguments_done = rt.of("response.function_call_arguments.done")[0]
    assert arguments_done["call_id"] == call["call_id"] and arguments_done["name"] == "lookup_order"

    assert second["response"]["status"] in ("completed", "incomplete")
    # the output went back and the reply was spoken; whether it uses the output's words SmolLM2-135M
    # gets right only sometimes (the spoken time, above, it does), so that is not pinned here
    assert second["response"]["output"][0]["content"][0]["transcript"].strip()
    assert len(rt.audio()) > 24000
