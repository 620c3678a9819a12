"""The OpenAI Agents SDK for Python (`openai-agents`: RealtimeAgent, RealtimeRunner) against a real
uvicorn server with the real models in-process, pointed at it with ``model_config={"url": ...}``
and nothing else changed: its defaults are semantic_vad, pcm16 both ways, its transcription model
and tracing "auto".

One conversation: a spoken question, a typed question, a reply stopped with
``session.interrupt()``, a spoken barge-in, and a tool the agent defines. After each step the
SDK's own history (what its ``history_updated`` events carry) is checked. The SDK parses every server event with the `openai`
package's pydantic types and reports a failure as an ``error`` session event; there must be none.
The LLM is a scripted Ollama (the only fake); STT, VAD, Smart Turn and TTS are real.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import numpy as np
from agents import function_tool
from agents.realtime import RealtimeAgent, RealtimeRunner, RealtimeSession
from agents.realtime.items import AssistantMessageItem, RealtimeToolCallItem, UserMessageItem

from deployments.llm import LlmOptions
from serve_app.clients.turn_end import InProcessTurnEnd
from serve_app.host import SessionHost
from tests.agents_conversation import REPLIES, STORY
from tests.live_server import LiveServer
from tests.realtime_harness import to_24k, with_silence
from tests.session_harness import build_app, server_options
from tests.text_normalise import normalise

CHUNK = 24000 * 2 // 50  # 20 ms of 24 kHz PCM16 bytes, as a microphone callback hands them over
STEP_TIMEOUT_S = 60

tool_calls: list[str] = []


@function_tool
def get_weather(city: str) -> str:
    """Get the current weather for a city."""
    tool_calls.append(city)
    return json.dumps({"city": city, "temp_c": 21, "sky": "sunny"})


class Listener:
    """Reads the session's events in the background, so each step can wait on the history it needs."""

    def __init__(self, session: RealtimeSession) -> None:
        self.session = session
        self.events: list[Any] = []
        self.errors: list[str] = []
        self.history: list[Any] = []  # the SDK's history, as its latest history_updated event gave it
        self.changed = asyncio.Condition()
        self.task = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        async for event in self.session:
            if event.type == "error":
                self.errors.append(str(event.error))
            elif event.type == "history_updated":
                self.history = list(event.history)
            self.events.append(event)
            async with self.changed:
                self.changed.notify_all()

    async def until(self, predicate: Callable[[], Any], what: str) -> Any:
        async def wait() -> Any:
            async with self.changed:
                while not (found := predicate()):
                    await self.changed.wait()
                return found

        try:
            return await asyncio.wait_for(wait(), STEP_TIMEOUT_S)
        except TimeoutError:
            kinds = [e.data.data.get("type") for e in self.events[-400:] if e.type == "raw_model_event"
                     and e.data.type == "raw_server_event" and "delta" not in e.data.data.get("type", "")]
            raise AssertionError(f"timed out waiting for {what}; last events {kinds}; errors {self.errors}") from None

    def raw(self, kind: str) -> list[dict]:
        return [e.data.data for e in self.events if e.type == "raw_model_event" and e.data.type == "raw_server_event"
                and e.data.data.get("type") == kind]


async def speak(session: RealtimeSession, pcm16: np.ndarray) -> None:
    audio = pcm16.astype("<i2").tobytes()
    for start in range(0, len(audio), CHUNK):
        await session.send_audio(audio[start : start + CHUNK])




def finished(item: Any) -> bool:
    return isinstance(item, AssistantMessageItem) and item.status in ("completed", "incomplete") and _said(item)


def _said(item: AssistantMessageItem) -> str:
    return "".join((part.transcript if part.type == "audio" else part.text) or "" for part in item.content)


async def test_the_python_agents_sdk_holds_a_whole_conversation(models, smart_turn_model, fake_ollama, tmp_path,
                                                               clip_by_name):
    fake_ollama.script(*REPLIES)
    tool_calls.clear()
    llm = models.with_llm(LlmOptions(backend="ollama", ollama_host=fake_ollama.url, ollama_model="llama3.2"))
    host = SessionHost(llm, server_options(tmp_path / "db.sqlite3", playback_lead_ms=300),
                       InProcessTurnEnd(smart_turn_model))
    question = to_24k(clip_by_name("librispeech_1089-134691-0000.wav").pcm16())  # "HE COULD WAIT NO LONGER"
    barge_in = to_24k(clip_by_name("jfk_inaugural_ask_not.wav").pcm16())[: 24000 * 3]  # "And so, my fellow..."
    agent = RealtimeAgent(name="Assistant", instructions="You are a helpful voice assistant. Answer in one short "
                          "sentence.", tools=[get_weather])

    with LiveServer(build_app(host)) as server:
        session = await RealtimeRunner(agent).run(model_config={
            "url": f"{server.ws_url}/v1/realtime?model=openrealtime", "api_key": "sk-local"})
        async with session:
            heard = Listener(session)
            configured = await heard.until(lambda: [u for u in heard.raw("session.updated")
                                                    if u["session"].get("tracing") == "auto"], "tracing: auto")

            # 1. a spoken question, with the SDK's default semantic_vad
            before = len(heard.history)
            await speak(session, with_silence(question, 3.0))
            user, reply = await heard.until(lambda: _turn(heard.history[before:]), "the spoken turn")
            assert user.content[0].type == "input_audio"
            assert normalise(user.content[0].transcript) == "he could wait no longer"
            assert reply.status == "completed" and _said(reply) == REPLIES[0].content

            # 2. a typed question
            before = len(heard.history)
            await session.send_message("What is the capital of France?")
            user, reply = await heard.until(lambda: _turn(heard.history[before:]), "the typed turn")
            assert [(p.type, p.text) for p in user.content] == [("input_text", "What is the capital of France?")]
            assert _said(reply) == REPLIES[1].content

            # 3. a long reply stopped with session.interrupt() (a "stop" button)
            before, audio_seen = len(heard.history), len(heard.raw("response.output_audio.delta"))
            await session.send_message("Tell me a long story about the sea.")
            await heard.until(lambda: len(heard.raw("response.output_audio.delta")) >= audio_seen + 10,
                              "the long reply's audio")
            await session.interrupt()
            cancelled = await heard.until(lambda: [d for d in heard.raw("response.done")
                                                   if d["response"]["status"] == "cancelled"], "the cancelled reply")
            (stopped,) = await heard.until(
                lambda: [i for i in heard.history[before:] if isinstance(i, AssistantMessageItem)
                         and i.status == "incomplete" and _said(i) and len(_said(i)) < len(STORY)],
                "the interrupted reply in history")
            assert cancelled[-1]["response"]["status_details"]["reason"] == "client_cancelled"
            assert STORY.startswith(_said(stopped))

            # 4. a spoken barge-in over a reply: the server's VAD cancels it
            before, cancels = len(heard.history), len(cancelled)
            audio_seen = len(heard.raw("response.output_audio.delta"))
            await session.send_message("Tell me another long story about a ship.")
            await heard.until(lambda: len(heard.raw("response.output_audio.delta")) >= audio_seen + 10,
                              "the second long reply's audio")
            await speak(session, with_silence(barge_in, 3.0))
            barged = await heard.until(lambda: [d for d in heard.raw("response.done")
                                                if d["response"]["status"] == "cancelled"][cancels:], "the barge-in")
            assert barged[0]["response"]["status_details"]["reason"] == "turn_detected"
            answered = await heard.until(
                lambda: [i for i in heard.history[before:] if finished(i) and _said(i) == REPLIES[4].content]
                and [i for i in heard.history[before:] if isinstance(i, UserMessageItem)
                     and i.content[0].type == "input_audio" and i.content[0].transcript], "the barge-in's answer")
            spoken = answered[0]
            assert "fellow american" in normalise(spoken.content[0].transcript)
            cut = next(i for i in heard.history[before:] if isinstance(i, AssistantMessageItem))
            assert cut.status == "incomplete" and len(_said(cut)) < len(STORY)

            # 5. the agent's tool: called by the server, run by the SDK, answered after its output
            before = len(heard.history)
            await session.send_message("What is the weather in Paris?")
            call, reply = await heard.until(lambda: _tool_turn(heard.history[before:]), "the tool round trip")
            assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Paris"}
            assert json.loads(call.output) == {"city": "Paris", "temp_c": 21, "sky": "sunny"}
            assert _said(reply) == REPLIES[6].content and tool_calls == ["Paris"]

            assert heard.errors == []
            heard.task.cancel()

    turn_detection = configured[-1]["session"]["audio"]["input"]["turn_detection"]
    assert turn_detection["type"] == "semantic_vad" and turn_detection["interrupt_response"] is True
    assert any(m["role"] == "tool" and json.loads(m["content"])["temp_c"] == 21
               for m in fake_ollama.requests[-1]["messages"])


def _turn(items: list[Any]) -> tuple[Any, Any] | None:
    users = [i for i in items if isinstance(i, UserMessageItem) and i.content
             and (i.content[0].type == "input_text" or i.content[0].transcript)]
    replies = [i for i in items if finished(i)]
    return (users[0], replies[-1]) if users and replies else None


def _tool_turn(items: list[Any]) -> tuple[Any, Any] | None:
    calls = [i for i in items if isinstance(i, RealtimeToolCallItem) and i.output]
    replies = [i for i in items if finished(i)]
    if calls and replies and items.index(replies[-1]) > items.index(calls[0]):
        return calls[0], replies[-1]
    return None
