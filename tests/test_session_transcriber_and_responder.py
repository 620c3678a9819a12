"""Transcriber and Responder on their own: scripted model services (the service boundary), a real store.

No sockets: each test drives one stage and reads what it reported through its SessionChannel.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from deployments.llm import ChatDone, TextDelta
from deployments.stt import Transcription
from serve_app.session.audio_input import SAMPLE_RATE, InputAudio
from serve_app.session.channel import SessionChannel
from serve_app.session.config import SessionSettings
from serve_app.session.context import ConversationContext
from serve_app.session.conversation import Conversation
from serve_app.session.events import (
    CreateResponse,
    Interrupted,
    LlmComplete,
    ResponseEnded,
    ResponseStarted,
    State,
    StopSpeaking,
    TranscriptFinal,
)
from serve_app.session.inbox import FirstAudio, ResponseFinished, Transcribed
from serve_app.session.options import SessionOptions
from serve_app.session.responder import Responder
from serve_app.session.tools import BuiltinTools
from serve_app.session.transcriber import PARTIAL_WINDOW_S, Transcriber
from serve_app.session.transcription_load import TranscriptionLoad
from serve_app.store import SessionStore


class ScriptedModels:
    """Model services that answer from a script and remember what they were asked."""

    def __init__(self, transcripts: list[str] = (), reply: str = "Hello there. How are you?") -> None:
        self.transcripts = list(transcripts)
        self.heard: list[int] = []  # samples of each transcription request
        self.reply = reply
        self.transcription_gate, self.synthesis_gate = asyncio.Event(), asyncio.Event()
        self.transcription_gate.set()
        self.synthesis_gate.set()
        self.prefilled: list = []  # prefill requests, in order
        self.prefill_asked = asyncio.Event()

    async def transcribe(self, pcm16k: np.ndarray) -> Transcription:
        self.heard.append(pcm16k.size)
        await self.transcription_gate.wait()
        return Transcription(text=self.transcripts.pop(0), language="en", duration_s=pcm16k.size / SAMPLE_RATE)

    async def chat(self, request):
        for word in self.reply.split(" "):
            yield TextDelta(text=word + " ")
        yield ChatDone(finish_reason="stop", prompt_tokens=12, completion_tokens=5, cached_tokens=4)

    async def prefill(self, request):
        self.prefilled.append(request)
        self.prefill_asked.set()
        return 0

    async def synthesize(self, request):
        await self.synthesis_gate.wait()
        yield b"\x00\x00" * (request.sample_rate // 10)  # 100 ms a sentence


def drain(channel: SessionChannel) -> list:
    events = []
    while not channel.outbox._queue.empty():
        events.append(channel.outbox._queue.get_nowait().event)
    return events


async def next_message(channel: SessionChannel, kind: type):
    while True:
        message = await asyncio.wait_for(channel.inbox.get(), 2)
        if isinstance(message, kind):
            return message


# ---- Transcriber ------------------------------------------------------------------------------


def talking_audio(seconds: int) -> InputAudio:
    audio = InputAudio(30, 300, None, lambda frames: None)
    audio.open(SAMPLE_RATE)
    audio.push(np.zeros(seconds * SAMPLE_RATE, dtype="<i2").tobytes(), to_vad=False)
    return audio


async def test_partials_decode_only_the_audio_after_a_long_partial_so_their_cost_stays_flat():
    channel, models = SessionChannel(), ScriptedModels(["one two three", "four"])
    transcriber = Transcriber(channel, models, TranscriptionLoad(), talking_audio(10), SessionOptions())
    transcriber.new_utterance(0, anchor=0)

    transcriber.maybe_partial(1, PARTIAL_WINDOW_S * SAMPLE_RATE + 100, 0, wanted=True)
    first = await next_message(channel, Transcribed)
    assert transcriber.partial_text(first, current=True) == "one two three"
    transcriber.maybe_partial(1, 8 * SAMPLE_RATE, 0, wanted=True)
    second = await next_message(channel, Transcribed)
    assert transcriber.partial_text(second, current=True) == "one two three four"  # the frozen text first
    assert models.heard == [PARTIAL_WINDOW_S * SAMPLE_RATE + 100, 8 * SAMPLE_RATE - (PARTIAL_WINDOW_S * SAMPLE_RATE + 100)]


async def test_partials_go_on_after_a_speculative_transcript_and_wait_their_interval():
    channel, models = SessionChannel(), ScriptedModels(["and then"])
    transcriber = Transcriber(channel, models, TranscriptionLoad(), talking_audio(10), SessionOptions())
    transcriber.new_utterance(0, anchor=0)
    transcriber.continue_after(2 * SAMPLE_RATE, "first part")
    transcriber.maybe_partial(1, SAMPLE_RATE // 2, 0, wanted=True)  # under partial_interval_ms: not yet
    transcriber.maybe_partial(1, 3 * SAMPLE_RATE, 0, wanted=False)  # the strategy does not want partials
    await asyncio.sleep(0)
    assert channel.inbox.empty()
    transcriber.maybe_partial(1, 3 * SAMPLE_RATE, 0, wanted=True)
    partial = await next_message(channel, Transcribed)
    assert transcriber.partial_text(partial, current=True) == "first part and then"
    assert models.heard == [SAMPLE_RATE]


async def test_a_partial_is_not_asked_while_a_final_transcript_is_outstanding():
    channel, models = SessionChannel(), ScriptedModels(["done"])
    models.transcription_gate.clear()
    load = TranscriptionLoad()
    transcriber = Transcriber(channel, models, load, talking_audio(3), SessionOptions())
    transcriber.new_utterance(0, anchor=0)
    transcriber.final(1, np.zeros(SAMPLE_RATE, dtype=np.float32), "msg_1")
    assert transcriber.busy
    await asyncio.sleep(0)
    transcriber.maybe_partial(2, 3 * SAMPLE_RATE, 0, wanted=True)  # someone waits on a final: no partial
    assert models.heard == [SAMPLE_RATE]
    models.transcription_gate.set()
    final = await next_message(channel, Transcribed)
    assert not final.partial and final.message_id == "msg_1" and final.result.text == "done"
    transcriber.arrived("msg_1")
    assert not transcriber.busy


# ---- Responder -------------------------------------------------------------------------------


@pytest.fixture
async def conversation(tmp_path):
    store = await SessionStore.open(tmp_path / "sessions.sqlite3")
    opened = Conversation(store, ConversationContext(16, 6000))
    await opened.create("s1", SessionSettings())
    yield opened
    await store.close()


def responder_for(channel: SessionChannel, conversation: Conversation, models: ScriptedModels) -> Responder:
    return Responder(channel, conversation, models, BuiltinTools(), SessionOptions(playback_lead_ms=0),
                     inputs_pending=lambda: False)


async def run_response(channel: SessionChannel, responder: Responder) -> None:
    """Act as the session actor for the response's milestones, until it ends."""
    while True:
        message = await asyncio.wait_for(channel.inbox.get(), 5)
        if isinstance(message, FirstAudio):
            await responder.on_first_audio(message)
        elif isinstance(message, ResponseFinished):
            assert await responder.on_finished(message.response)
            return


async def test_a_user_turn_is_answered_stored_and_recorded(conversation):
    channel, models = SessionChannel(), ScriptedModels()
    responder = responder_for(channel, conversation, models)
    channel.state = State.TRANSCRIBING
    responder.new_turn(speech_end_at=1.0)
    await responder.user_turn("hi", "msg_user")
    assert channel.state is State.THINKING and responder.busy
    await run_response(channel, responder)

    events = drain(channel)
    assert isinstance(events[0], TranscriptFinal)
    assert any(isinstance(e, ResponseStarted) for e in events)
    assert [e.full_text for e in events if isinstance(e, LlmComplete)] == ["Hello there. How are you?"]
    ended = [e for e in events if isinstance(e, ResponseEnded)]
    assert [e.status for e in ended] == ["completed"] and ended[0].input_tokens == 12
    assert channel.state is State.LISTENING and responder.last_input is None
    stored = [(m.role, m.content) for m in await conversation.store.messages("s1")]
    assert stored == [("user", "hi"), ("assistant", "Hello there. How are you?")]
    turn = (await conversation.store.turns("s1"))[0]
    assert not turn.interrupted and turn.cached_tokens == 4 and turn.first_audio_at is not None


async def test_the_answer_that_fills_the_window_has_the_llm_read_the_moved_window_while_it_plays(tmp_path):
    store = await SessionStore.open(tmp_path / "sessions.sqlite3")
    conversation = Conversation(store, ConversationContext(4, 6000))
    await conversation.create("s1", SessionSettings())
    channel, models = SessionChannel(), ScriptedModels()
    responder = responder_for(channel, conversation, models)
    try:
        for index in range(4):
            channel.state = State.TRANSCRIBING
            responder.new_turn(speech_end_at=1.0)
            await responder.user_turn(f"question {index}", f"msg_{index}")
            await run_response(channel, responder)
            if index < 3:
                assert not models.prefilled  # the next turn still fits the window
        await asyncio.wait_for(models.prefill_asked.wait(), 2)
        (request,) = models.prefilled
        said = [m.content for m in request.messages[1:]]
        assert said[0] == "question 2" and said[-1] == models.reply  # the window moved on to half
        assert request.tools  # the built-in tools: the same prompt prefix the next turn renders
        channel.state = State.TRANSCRIBING
        responder.new_turn(speech_end_at=1.0)
        await responder.user_turn("question 4", "msg_4")
        sent = [m.content for m in responder.response.history[1:]]
        assert sent[: len(said)] == said  # the next turn extends what was read ahead
        await run_response(channel, responder)
    finally:
        await store.close()


async def test_barge_in_cuts_the_stored_reply_to_what_was_heard(conversation):
    channel, models = SessionChannel(), ScriptedModels()
    models.synthesis_gate.clear()  # nothing is spoken yet: nothing can have been heard
    responder = responder_for(channel, conversation, models)
    await responder.user_turn("hi", "msg_user")
    response = responder.response
    while response.reply_message_id is None:  # the LLM finished; TTS is still waiting
        await asyncio.sleep(0.01)
    old_generation = channel.generation
    await responder.barge_in("user_speech")

    assert channel.generation == old_generation + 1 and not responder.busy
    events = drain(channel)
    assert [type(e) for e in events if isinstance(e, Interrupted | StopSpeaking)] == [Interrupted, StopSpeaking]
    assert [(e.status, e.reason) for e in events if isinstance(e, ResponseEnded)] == [("cancelled", "user_speech")]
    stored = await conversation.store.messages("s1")
    assert [(m.content, m.status) for m in stored if m.role == "assistant"] == [("", "interrupted")]
    assert conversation.context.messages[-1].content == ""
    assert (await conversation.store.turns("s1"))[0].interrupted


async def test_a_requested_response_waits_for_inputs_still_in_flight(conversation):
    channel, models = SessionChannel(), ScriptedModels()
    pending = {"inputs": True}
    responder = Responder(channel, conversation, models, BuiltinTools(), SessionOptions(),
                          inputs_pending=lambda: pending["inputs"])
    await responder.request(CreateResponse("resp_1"))
    assert not responder.busy and responder.queued is not None
    await responder.request(CreateResponse("resp_2"))
    assert [e.code for e in drain(channel)] == ["response_in_progress"]
    pending["inputs"] = False
    await responder.start_queued()
    assert responder.busy and responder.response.tag == "resp_1"
    await responder.response.cancel()
