"""A barge-in or a disconnect that lands in the same loop turn as a model's next item still stops the work.

On Python 3.11 ``asyncio.wait_for`` returns the inner result and drops a cancellation that arrives
after the inner call finished but before the waiting task resumed. A model stream read that way
kept a cancelled response's speaker running: with its audio held by the barge-in's onset (or with
the LLM side cancelled and no end of sentences coming) it waited for ever, so ``Response.cancel``,
and the session actor awaiting it in ``Responder.barge_in`` / ``Session._on_disconnect``, never
returned (no ``response.done`` cancelled; ``openrealtime_sessions_active`` left at 1).

The interleaving is made exact with events: the model's next item is let go and the cancel is sent
in the same synchronous step, as the actor does when an item is ready while it handles a barge-in.
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest

from deployments.llm import ChatMessage, LlmOptions
from serve_app.clients.errors import guarded_stream
from serve_app.clients.models import ServiceError
from serve_app.session.response import Response, ResponseSettings
from serve_app.session.tools import BuiltinTools
from tests.agents_conversation import STORY
from tests.fake_ollama import FakeReply


async def test_a_stream_cancelled_as_its_next_item_arrives_stops_there():
    first, second = asyncio.get_running_loop().create_future(), asyncio.get_running_loop().create_future()
    received: list[str] = []
    got_first = asyncio.Event()
    stopped = asyncio.Event()

    async def model_stream():  # a model's stream: each item comes when the model has it
        yield await first
        yield await second

    async def consume() -> None:
        async for item in guarded_stream("tts", model_stream(), 30.0, stopped.set):
            received.append(item)
            got_first.set()

    consumer = asyncio.get_running_loop().create_task(consume())
    first.set_result("one")
    await got_first.wait()
    second.set_result("two")  # the model's next item is ready ...
    consumer.cancel()  # ... in the same loop turn as the barge-in
    await asyncio.gather(consumer, return_exceptions=True)
    assert consumer.cancelled(), "the cancellation was dropped: the consumer read on"
    assert received == ["one"] and stopped.is_set()


async def test_a_stream_whose_next_item_does_not_come_in_time_is_a_timeout_error():
    never = asyncio.get_running_loop().create_future()
    stopped = asyncio.Event()

    async def model_stream():
        yield "one"
        yield await never  # a replica that stopped answering

    read = []
    with pytest.raises(ServiceError) as failure:
        async for item in guarded_stream("llm", model_stream(), 0.05, stopped.set):
            read.append(item)
    assert read == ["one"] and (failure.value.phase, failure.value.code) == ("llm", "timeout")
    assert stopped.is_set()


class HeldTts:
    """The real TTS, its second chunk held until the test lets it go (the model boundary, not a fake)."""

    def __init__(self, tts: Any) -> None:
        self.tts = tts
        self.chunks = 0
        self.holding = asyncio.Event()  # the speaker is waiting for the held chunk
        self.release = asyncio.get_running_loop().create_future()

    async def synthesize(self, request):
        async for chunk in self.tts.synthesize(request):
            self.chunks += 1
            if self.chunks == 2:
                self.holding.set()
                await self.release
            yield chunk


class Host:
    def __init__(self) -> None:
        self.events: list[Any] = []

    def emit(self, event, generation):
        self.events.append(event)

    async def first_audio(self, generation):
        return None

    async def store_tool_call(self, call):
        return None

    async def finish_tool_call(self, call_id, result, status):
        return None

    async def store_reply(self, text):
        return 1


async def test_a_response_cancelled_as_its_next_audio_chunk_arrives_ends(models, fake_ollama):
    fake_ollama.script(FakeReply(content=STORY, chunks=40))
    services = copy.copy(models.with_llm(LlmOptions(backend="ollama", ollama_host=fake_ollama.url,
                                                    ollama_model="llama3.2")))
    tts = services.tts = HeldTts(models.tts)
    settings = ResponseSettings(instructions="", output_rate=24000, voice=None, max_tokens=2000, temperature=0,
                                max_tool_rounds=0, playback_lead_ms=60_000, client_tool_timeout_s=5,
                                builtin_tools=False)
    finished: list[Response] = []

    async def on_done(response: Response) -> None:
        finished.append(response)

    response = Response(1, Host(), services, BuiltinTools(), [ChatMessage(role="user", content="A story, please.")],
                        settings, on_done=on_done, message_id="msg_1")
    async with asyncio.timeout(120):
        await tts.holding.wait()
    response.pause_audio()  # the user's onset holds the reply's audio (Responder.hold_audio) ...
    tts.release.set_result(None)  # ... the TTS hands over its next chunk ...
    try:  # ... and the confirmed speech cancels the response in the same loop turn (Responder.cancel)
        async with asyncio.timeout(15):
            await response.cancel()
    except TimeoutError:
        response.resume_audio()  # let the stuck speaker run out, so the test leaves nothing behind
        response.task.cancel()
        pytest.fail("Response.cancel() did not return: a cancelled speaker kept running and waits for ever")
    assert response.task.cancelled() and finished == []


class StubbornTts:
    """A TTS client that swallows the first ``swallow`` cancels it gets (a client library's bug):
    the real TTS for the first chunk, then a wait that shrugs off cancellation."""

    def __init__(self, tts: Any, swallow: int) -> None:
        self.tts, self.swallow = tts, swallow
        self.cancels = 0
        self.stuck = asyncio.Event()

    async def synthesize(self, request):
        async for chunk in self.tts.synthesize(request):
            yield chunk
            break
        self.stuck.set()
        while True:
            try:
                await asyncio.get_running_loop().create_future()  # never resolved
            except asyncio.CancelledError:
                self.cancels += 1
                if self.cancels > self.swallow:
                    raise


def stubborn_response(models, fake_ollama, swallow: int) -> tuple[Response, StubbornTts]:
    fake_ollama.script(FakeReply(content=STORY, chunks=40))
    services = copy.copy(models.with_llm(LlmOptions(backend="ollama", ollama_host=fake_ollama.url,
                                                    ollama_model="llama3.2")))
    tts = services.tts = StubbornTts(models.tts, swallow)
    settings = ResponseSettings(instructions="", output_rate=24000, voice=None, max_tokens=2000, temperature=0,
                                max_tool_rounds=0, playback_lead_ms=60_000, client_tool_timeout_s=5,
                                builtin_tools=False)

    async def on_done(response: Response) -> None:
        return None

    return Response(1, Host(), services, BuiltinTools(), [ChatMessage(role="user", content="A story, please.")],
                    settings, on_done=on_done, message_id="msg_1"), tts


async def test_a_cancel_swallowed_once_is_asked_again_and_the_response_ends(models, fake_ollama):
    response, tts = stubborn_response(models, fake_ollama, swallow=1)
    async with asyncio.timeout(120):
        await tts.stuck.wait()
    async with asyncio.timeout(10):
        await response.cancel(grace_s=0.2)
    assert response.task.done() and tts.cancels == 2


async def test_a_response_that_never_stops_does_not_hold_the_session_for_ever(models, fake_ollama, caplog):
    response, tts = stubborn_response(models, fake_ollama, swallow=10**6)
    async with asyncio.timeout(120):
        await tts.stuck.wait()
    async with asyncio.timeout(10):
        await response.cancel(grace_s=0.2)  # returns: the actor goes on
    assert not response.task.done() and tts.cancels == 3
    assert "did not stop after 3 cancels" in caplog.text
    tts.swallow = 0  # let it go, so the test leaves nothing running
    response.task.cancel()
    await asyncio.gather(response.task, return_exceptions=True)
    assert response.task.done()
