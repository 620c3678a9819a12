"""Pipecat 1.14's OpenAIRealtimeLLMService(base_url=...) against a real uvicorn server with the real
models in-process. Pipecat cannot be installed beside Ray (protobuf), so its side runs in
.venv-pipecat (scripts/pipecat_env.sh, run by `make test`) as tests/pipecat_client.py, a pipeline
built the way Pipecat's examples build one. The LLM is a scripted Ollama (the only fake); STT,
VAD and TTS are real.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from deployments.llm import LlmOptions
from serve_app.host import SessionHost
from tests.fake_ollama import FakeOllama, FakeReply, RunningFakeOllama
from tests.live_server import LiveServer
from tests.realtime_harness import to_24k
from tests.session_harness import build_app, server_options
from tests.text_normalise import normalise

ROOT = Path(__file__).resolve().parents[1]
PYTHON = ROOT / ".venv-pipecat" / "bin" / "python"
STORY = " ".join(f"Sentence number {n} of a long story about the sea and a ship." for n in range(1, 41))
REPLIES = {
    "greeting": FakeReply(content="Hello, I am listening."),
    "could wait": FakeReply(content="I hear you: he could wait no longer."),
    "capital of france": FakeReply(content="Paris is the capital of France."),
    "long story": FakeReply(content=STORY, chunks=40),
    "fellow": FakeReply(content="All right, I will stop there."),
    "weather in paris": FakeReply(tool_calls=[{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]),
    "tool result": FakeReply(content="It is sunny and 21 degrees in Paris."),
}


@dataclass
class AnsweringOllama(FakeOllama):
    """Scripted by what was last said rather than by order: Pipecat's interruptions and the
    server's VAD decide how many responses a step starts, and a queue would shift under them."""

    def _next_reply(self) -> FakeReply:
        said = [m for m in self.requests[-1]["messages"] if m["role"] != "assistant"]
        if said and said[-1]["role"] == "tool":
            return REPLIES["tool result"]
        for message in reversed(said):  # the latest thing said that the script knows
            text = normalise(str(message.get("content", "")))
            if reply := next((r for key, r in REPLIES.items() if key in text), None):
                return reply
        return REPLIES["greeting"]  # nothing said yet: the bot speaks first


@pytest.fixture
def answering_ollama():
    server = RunningFakeOllama(AnsweringOllama())
    yield server.start()
    server.stop()


@pytest.fixture(scope="module")
def pipecat_python() -> Path:
    assert PYTHON.exists(), "run scripts/pipecat_env.sh (make test does) to build .venv-pipecat"
    return PYTHON


def test_pipecat_realtime_service_holds_a_whole_conversation(pipecat_python, models, answering_ollama, tmp_path,
                                                            clip_by_name):
    fake_ollama = answering_ollama
    llm = models.with_llm(LlmOptions(backend="ollama", ollama_host=fake_ollama.url, ollama_model="llama3.2"))
    host = SessionHost(llm, server_options(tmp_path / "db.sqlite3", playback_lead_ms=300))
    clips = {"speech": to_24k(clip_by_name("librispeech_1089-134691-0000.wav").pcm16()),  # "HE COULD WAIT..."
             "barge_in": to_24k(clip_by_name("jfk_inaugural_ask_not.wav").pcm16())[: 24000 * 3]}
    files = {}
    for name, pcm in clips.items():
        files[name] = str(tmp_path / f"{name}.pcm")
        Path(files[name]).write_bytes(pcm.astype("<i2").tobytes())
    with LiveServer(build_app(host)) as server:
        options = {"url": f"{server.ws_url}/v1/realtime", **files}
        finished = subprocess.run([str(pipecat_python), str(ROOT / "tests" / "pipecat_client.py"), json.dumps(options)],
                                  check=False, capture_output=True, text=True, timeout=240)
    lines = [line for line in finished.stdout.splitlines() if line.startswith("{")]
    assert finished.returncode == 0 and lines, f"pipecat client failed: {finished.stderr[-4000:]}"
    report = json.loads(lines[-1])
    (tmp_path / "report.json").write_text(json.dumps(report, indent=1))  # kept for a failing run's reader
    (tmp_path / "pipecat.log").write_text(finished.stderr)

    assert report.get("failure") is None, report.get("failure")
    assert report["errors"] == []  # Pipecat treats every error event as fatal
    steps = report["steps"]
    assert steps["greeting"]["spoken"] == REPLIES["greeting"].content and steps["greeting"]["audio_bytes"] > 24000
    voice = steps["voice"]
    assert [normalise(t) for t in voice["transcripts"]] == ["he could wait no longer"]
    assert voice["interim"] == []  # no interim copy of the same words
    assert voice["spoken"] == REPLIES["could wait"].content and voice["audio_bytes"] > 24000
    assert steps["text"]["spoken"] == REPLIES["capital of france"].content
    assert 24000 * 2 <= steps["interrupt"]["audio_bytes"] < len(STORY) * 24000  # stopped long before its end
    assert "fellow america" in normalise(" ".join(steps["barge_in"]["transcripts"]))  # "...my fellow Americans"
    assert steps["barge_in"]["answer"] == REPLIES["fellow"].content
    assert report["calls"] == [{"city": "Paris"}]
    assert steps["tool"]["spoken"] == REPLIES["tool result"].content

    # the LLMContext Pipecat keeps: the spoken question, the typed one, the function call and its result
    context = report["context"]
    said = [m.get("content") for m in context if m.get("role") == "user"]
    assert any(normalise(str(s)) == "he could wait no longer" for s in said)
    assert "What is the capital of France?" in said
    assert any(m.get("role") == "tool" and json.loads(m["content"]) == {"city": "Paris", "temp_c": 21}
               for m in context)
    assert any(m["role"] == "tool" for m in fake_ollama.requests[-1]["messages"])
