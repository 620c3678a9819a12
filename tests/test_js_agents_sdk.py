"""The OpenAI Agents SDK for JavaScript (`@openai/agents`, tests/js/package.json) over its WebSocket
transport, in Node, against a real uvicorn server with the real models in-process.

tests/js/agents_websocket_session.mjs holds one conversation the way a Node app would: a spoken
question with the SDK's default session (semantic_vad, pcm16 24 kHz, its transcription model), a
typed question, a reply stopped by `session.interrupt()`, a spoken barge-in, and a tool the agent
defines. It reports the SDK's own `session.history` after each step and every server event the
SDK's zod schemas reject (the SDK throws from its socket listener on some of them, which kills a
Node process). The LLM is a scripted Ollama (the only fake); STT, VAD, Smart Turn and TTS are real.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from deployments.llm import LlmOptions
from serve_app.clients.turn_end import InProcessTurnEnd
from serve_app.host import SessionHost
from tests.agents_conversation import REPLIES, STORY
from tests.live_server import LiveServer
from tests.realtime_harness import to_24k
from tests.session_harness import build_app, server_options
from tests.text_normalise import normalise

JS_DIR = Path(__file__).parent / "js"
SCRIPT = JS_DIR / "agents_websocket_session.mjs"



def _node_modules_installed() -> bool:
    return (JS_DIR / "node_modules" / "@openai" / "agents" / "package.json").exists()


@pytest.fixture(scope="module")
def node() -> str:
    path = shutil.which("node")
    assert path, "Node 20+ is needed for the JS client tests (make test installs tests/js with npm ci)"
    assert _node_modules_installed(), "run `npm ci --prefix tests/js` (make test does)"
    return path


def run_session(node: str, url: str, tmp_path: Path, speech, barge_in) -> dict:
    files = {}
    for name, pcm in (("speech", speech), ("barge_in", barge_in)):
        files[name] = str(tmp_path / f"{name}.pcm")
        Path(files[name]).write_bytes(pcm.astype("<i2").tobytes())
    options = {"url": url, **files}
    finished = subprocess.run([node, str(SCRIPT), json.dumps(options)], check=False, cwd=JS_DIR,
                              capture_output=True, text=True, timeout=180,
                              env={**os.environ, "NODE_NO_WARNINGS": "1"})
    lines = [line for line in finished.stdout.splitlines() if line.startswith("{")]
    assert finished.returncode == 0 and lines, f"node failed ({finished.returncode}): {finished.stderr[-3000:]}"
    report = json.loads(lines[-1])
    (tmp_path / "report.json").write_text(json.dumps(report, indent=1))  # kept for a failing run's reader
    return report


def test_the_js_agents_sdk_holds_a_whole_conversation(node, models, smart_turn_model, fake_ollama, tmp_path,
                                                     clip_by_name):
    fake_ollama.script(*REPLIES)
    llm = models.with_llm(LlmOptions(backend="ollama", ollama_host=fake_ollama.url, ollama_model="llama3.2"))
    host = SessionHost(llm, server_options(tmp_path / "db.sqlite3", playback_lead_ms=300),
                       InProcessTurnEnd(smart_turn_model))
    speech = to_24k(clip_by_name("librispeech_1089-134691-0000.wav").pcm16())  # "HE COULD WAIT NO LONGER"
    barge_in = to_24k(clip_by_name("jfk_inaugural_ask_not.wav").pcm16())[: 24000 * 3]
    with LiveServer(build_app(host)) as server:
        report = run_session(node, f"{server.ws_url}/v1/realtime?model=openrealtime", tmp_path, speech, barge_in)

    assert report.get("failure") is None, report.get("failure")
    assert report["schema_failures"] == [], json.dumps(report["schema_failures"], indent=1)[:4000]
    assert report["errors"] == []
    # the SDK's defaults reached the server and came back as the effective session
    turn_detection = report["session"]["audio"]["input"]["turn_detection"]
    assert turn_detection["type"] == "semantic_vad"
    assert report["session"]["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}

    steps = report["steps"]
    user, reply = _roles(steps["voice"]["history"], "user", "assistant")
    assert user["content"][0]["type"] == "input_audio"
    assert normalise(user["content"][0]["transcript"]) == "he could wait no longer"
    assert reply["status"] == "completed" and reply["content"][0]["transcript"] == REPLIES[0].content
    assert steps["voice"]["answer"] == REPLIES[0].content

    user, reply = _roles(steps["text"]["history"], "user", "assistant")
    assert user["content"] == [{"type": "input_text", "text": "What is the capital of France?"}]
    assert reply["content"][0]["transcript"] == REPLIES[1].content

    stopped = steps["interrupt"]
    assert (stopped["status"], stopped["reason"]) == ("cancelled", "client_cancelled")
    assert 0 < stopped["audio_end_ms"] <= stopped["audio_received_ms"] + 1
    (reply,) = [i for i in stopped["history"] if i.get("role") == "assistant"]
    heard = reply["content"][0]["transcript"]
    assert reply["status"] == "incomplete" and heard and len(heard) < len(STORY) and STORY.startswith(heard)

    barged = steps["barge_in"]
    assert (barged["status"], barged["reason"]) == ("cancelled", "turn_detected")
    replies = [i for i in barged["history"] if i.get("role") == "assistant"]
    assert replies[0]["status"] == "incomplete" and len(replies[0]["content"][0]["transcript"]) < len(STORY)
    assert replies[-1]["content"][0]["transcript"] == REPLIES[4].content
    (spoken,) = [i for i in barged["history"] if i.get("role") == "user" and i["content"][0]["type"] == "input_audio"]
    assert "fellow american" in normalise(spoken["content"][0]["transcript"])  # "And so, my fellow Americans"

    history = steps["tool"]["history"]
    (call,) = [i for i in history if i["type"] == "function_call"]
    assert call["name"] == "get_weather" and json.loads(call["arguments"]) == {"city": "Paris"}
    assert json.loads(call["output"]) == {"city": "Paris", "temp_c": 21, "sky": "sunny"}
    assert report["tool_calls"] == ["Paris"]
    assert [i for i in history if i.get("role") == "assistant"][-1]["content"][0]["transcript"] == REPLIES[6].content
    # the tool's result reached the model as a tool message
    assert any(m["role"] == "tool" and json.loads(m["content"])["temp_c"] == 21 for m in fake_ollama.requests[-1]["messages"])


def _roles(history: list[dict], *roles: str) -> list[dict]:
    found = []
    for role in roles:
        matching = [item for item in history if item.get("type") == "message" and item.get("role") == role]
        assert matching, f"no {role} item in {history}"
        found.append(matching[-1])
    return found
