"""LiveKit Agents' OpenAI plugin (`livekit-plugins-openai`, `openai.realtime.RealtimeModel(base_url=...)`)
against a real uvicorn server with the real models in-process.

The plugin's RealtimeSession is what an AgentSession drives; here it is driven directly (no LiveKit
room): microphone frames pushed with its defaults (semantic_vad, its transcription model, 24 kHz),
`generate_reply()`, `interrupt()`, and a tool round trip through `update_tools` / `update_chat_ctx`.
Its own transcript events and remote chat context are checked after each step. The LLM is a
scripted Ollama (the only fake); STT, VAD, Smart Turn and TTS are real.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import numpy as np
from livekit import rtc
from livekit.agents import llm
from livekit.plugins import openai as lk_openai

from deployments.llm import LlmOptions
from serve_app.clients.turn_end import InProcessTurnEnd
from serve_app.host import SessionHost
from tests.fake_ollama import FakeReply
from tests.live_server import LiveServer
from tests.realtime_harness import to_24k, with_silence
from tests.session_harness import build_app, server_options
from tests.text_normalise import normalise

STORY = " ".join(f"Sentence number {n} of a long story about the sea and a ship." for n in range(1, 41))
REPLIES = [
    FakeReply(content="I hear you: he could wait no longer."),                       # the spoken question
    FakeReply(content="Hello there, how can I help?"),                              # generate_reply()
    FakeReply(content=STORY, chunks=40),                                            # stopped by interrupt()
    FakeReply(tool_calls=[{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]),
    FakeReply(content="It is sunny and 21 degrees in Paris."),                      # after the tool result
]
FRAME = 480  # 20 ms at 24 kHz
STEP_TIMEOUT_S = 60


@llm.function_tool
async def get_weather(city: str) -> str:
    """Get the current weather for a city."""
    return json.dumps({"city": city, "temp_c": 21})


class Generation:
    """What one generation_created event streamed: its text and how much audio."""

    def __init__(self, event: llm.GenerationCreatedEvent, watch: Watch) -> None:
        self.event, self.watch, self.text, self.audio_samples, self.calls = event, watch, "", 0, []
        self.done = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        async def message(gen: llm.MessageGeneration) -> None:
            async def text() -> None:
                async for piece in gen.text_stream:
                    self.text += piece

            async def audio() -> None:
                async for frame in gen.audio_stream:
                    self.audio_samples += frame.samples_per_channel
                    self.watch.poke()

            await asyncio.gather(text(), audio())

        async def calls() -> None:
            async for call in self.event.function_stream:
                self.calls.append(call)

        messages = []
        async def messages_loop() -> None:
            async for gen in self.event.message_stream:
                messages.append(asyncio.create_task(message(gen)))

        await asyncio.gather(messages_loop(), calls())
        await asyncio.gather(*messages)


class Watch:
    """Wakes waiters whenever the plugin reports something (its events are plain callbacks)."""

    def __init__(self) -> None:
        self._changed = asyncio.Event()

    def poke(self, *_: Any) -> None:
        self._changed.set()

    async def until(self, predicate, what: str) -> Any:
        async def wait() -> Any:
            while True:
                self._changed.clear()  # before the check: a poke after it is not lost
                if found := predicate():
                    return found
                await self._changed.wait()

        try:
            return await asyncio.wait_for(wait(), STEP_TIMEOUT_S)
        except TimeoutError:
            raise AssertionError(f"timed out waiting for {what}") from None


def push(session, pcm16: np.ndarray) -> None:
    for start in range(0, pcm16.size, FRAME):
        chunk = pcm16[start : start + FRAME]
        if chunk.size < FRAME:
            chunk = np.pad(chunk, (0, FRAME - chunk.size))
        session.push_audio(rtc.AudioFrame(chunk.astype("<i2").tobytes(), 24000, 1, FRAME))


async def test_livekit_realtime_model_voice_generate_reply_interrupt_and_tools(models, smart_turn_model, fake_ollama,
                                                                               tmp_path, clip_by_name):
    fake_ollama.script(*REPLIES)
    ollama = models.with_llm(LlmOptions(backend="ollama", ollama_host=fake_ollama.url, ollama_model="llama3.2"))
    host = SessionHost(ollama, server_options(tmp_path / "db.sqlite3", playback_lead_ms=300),
                       InProcessTurnEnd(smart_turn_model))
    question = to_24k(clip_by_name("librispeech_1089-134691-0000.wav").pcm16())  # "HE COULD WAIT NO LONGER"

    with LiveServer(build_app(host)) as server:
        async with aiohttp.ClientSession() as http:
            model = lk_openai.realtime.RealtimeModel(base_url=f"http://127.0.0.1:{server.port}/v1",
                                                     api_key="sk-local", http_session=http)
            session = model.session()
            transcripts: list[llm.InputTranscriptionCompleted] = []
            generations: list[Generation] = []
            errors: list[Any] = []
            server_events: list[dict] = []
            watch = Watch()

            def recorder(into: list) -> Any:
                return lambda event: (into.append(event), watch.poke())

            session.on("input_audio_transcription_completed", recorder(transcripts))
            session.on("generation_created", lambda event: recorder(generations)(Generation(event, watch)))
            session.on("error", recorder(errors))
            session.on("openai_server_event_received", recorder(server_events))
            try:
                # 1. a spoken question with the plugin's default turn detection
                push(session, with_silence(question, 3.0))
                await watch.until(lambda: [t for t in transcripts if t.is_final], "the final transcript")
                voice = (await watch.until(lambda: generations, "the spoken turn's reply"))[0]
                await asyncio.wait_for(voice.done, STEP_TIMEOUT_S)

                # 2. generate_reply: the plugin matches response.created by its metadata
                typed = await asyncio.wait_for(session.generate_reply(instructions="Greet the user."), 15)
                await asyncio.wait_for(generations[-1].done, STEP_TIMEOUT_S)

                # 3. interrupt(): response.cancel mid-reply
                await asyncio.wait_for(session.generate_reply(instructions="Tell a long story."), 15)
                story = generations[-1]
                await watch.until(lambda: story.audio_samples >= 24000, "a second of the story")
                session.interrupt()
                await asyncio.wait_for(story.done, STEP_TIMEOUT_S)
                # what AgentSession does next: cut the reply to what was played
                (story_id,) = {e["item_id"] for e in server_events if e["type"] == "response.output_audio.delta"
                               and e["response_id"] == story.event.response_id}
                session.truncate(message_id=story_id, modalities=["audio"], audio_end_ms=500)
                truncated = await watch.until(lambda: [e for e in server_events
                                                     if e["type"] == "conversation.item.truncated"], "the truncation")

                # 4. a tool: the call arrives on function_stream, its output goes back in the chat context
                await session.update_tools([get_weather])
                await asyncio.wait_for(session.generate_reply(instructions="Check the weather in Paris."), 15)
                asking = generations[-1]
                await asyncio.wait_for(asking.done, STEP_TIMEOUT_S)
                (call,) = asking.calls
                chat = session.chat_ctx.copy()
                chat.items.append(llm.FunctionCallOutput(call_id=call.call_id, name=call.name,
                                                         output=await get_weather(city="Paris"), is_error=False))
                await session.update_chat_ctx(chat)
                await asyncio.wait_for(session.generate_reply(), 15)
                answer = generations[-1]
                await asyncio.wait_for(answer.done, STEP_TIMEOUT_S)
                remote = session.chat_ctx.copy()
            finally:
                await session.aclose()

    assert errors == []
    # one utterance, one transcript event (it came twice, interim then final, while a delta repeated it)
    assert [(normalise(t.transcript), t.is_final) for t in transcripts] == [("he could wait no longer", True)]
    user_items = [i for i in remote.items if i.type == "message" and i.role == "user"]
    assert [item.content for item in user_items][:1] == [[transcripts[0].transcript]]
    assert voice.text == REPLIES[0].content and voice.audio_samples > 24000 * 0.5
    assert typed.user_initiated and generations[1].text == REPLIES[1].content
    (cancelled,) = [e for e in server_events if e["type"] == "response.done"
                    and e["response"]["id"] == story.event.response_id]
    assert cancelled["response"]["status"] == "cancelled"
    assert cancelled["response"]["status_details"]["reason"] == "client_cancelled"
    assert story.audio_samples < 24000 * 10  # the story's audio stopped (all of it is ~2 minutes)
    assert truncated[0]["item_id"] == story_id and truncated[0]["audio_end_ms"] == 500
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Paris"}
    assert answer.text == REPLIES[4].content
    assert any(m["role"] == "tool" and json.loads(m["content"])["temp_c"] == 21
               for m in fake_ollama.requests[-1]["messages"])
