"""One assistant response: LLM (with tool rounds) -> sentences -> TTS -> audio paced to real time.

The response runs as its own task and owns only its pipeline. It reports to the session actor
through ``ResponseHost`` (state-relevant milestones go through the actor's inbox), and every event
it emits carries its generation, so once a barge-in bumps the generation nothing stale is sent.
Audio is sent at most ``playback_lead_ms`` ahead of real time: that bounds what a barge-in has
to drop, and lets the stored reply be cut to what the user can actually have heard.

Every way it runs ends: a model service that fails raises ``ServiceError``; anything else that
fails in a step (a client library, a tool, the store) is turned into one with that step's phase
and the code ``internal_error``, so the session always gets its ``ResponseFinished`` and takes the
next turn. Its tool calls end ``ok``, ``error`` or ``cancelled`` in the store, never ``pending``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from deployments.llm import ChatDone, ChatMessage, ChatRequest, TextDelta, ToolCall, ToolCallEvent
from deployments.tts import SynthesisRequest
from serve_app.clients.models import ModelServices, ServiceError
from serve_app.session.events import (
    AudioComplete,
    AudioOut,
    ErrorEvent,
    Event,
    LlmComplete,
    LlmToken,
    SentenceSent,
    ToolCallFinished,
    ToolCallStarted,
)
from serve_app.session.sentences import SentenceSplitter, spoken_form
from serve_app.session.tools import BuiltinTools, ToolError

logger = logging.getLogger(__name__)

# How long a cancelled response may take to unwind (its model streams close on their handles)
# before it is asked again; after the last ask it is left to finish alone, its output already
# dropped by the channel's generation check, so one stuck stream never stalls the session's loop.
CANCEL_GRACE_S = 5.0
CANCEL_ASKS = 3


class ResponseHost(Protocol):
    """What a response needs from its session."""

    def emit(self, event: Event, generation: int) -> None: ...

    async def first_audio(self, generation: int) -> None: ...

    async def store_tool_call(self, call: ToolCall) -> None: ...

    async def finish_tool_call(self, call_id: str, result: Any, status: str) -> None: ...

    async def store_reply(self, text: str) -> int: ...


@dataclass
class ResponseSettings:
    instructions: str
    output_rate: int
    voice: str | None
    max_tokens: int
    temperature: float
    max_tool_rounds: int
    playback_lead_ms: int
    client_tool_timeout_s: float
    client_tools: list[dict] = field(default_factory=list)
    speak: bool = True  # False: text only
    builtin_tools: bool = True
    end_on_client_tool: bool = False  # client calls end the response instead of waiting for ToolResult
    tool_choice: str | dict = "auto"


@dataclass
class SpokenSentence:
    text: str
    start_ms: float  # position in the response's audio
    sent_ms: float = 0.0  # audio of this sentence sent so far
    complete: bool = False  # its synthesis finished (sent_ms is then its whole length)


def chat_request(settings: ResponseSettings, tools: BuiltinTools, messages: list[ChatMessage],
                 allow_tools: bool = True) -> ChatRequest:
    """What a response with ``settings`` asks the LLM, and so what a prefill of its prompt must match."""
    builtin = [spec.schema() for spec in tools.specs()] if settings.builtin_tools else []
    offered = builtin + settings.client_tools if allow_tools else []
    return ChatRequest(messages=messages, tools=offered, tool_choice=settings.tool_choice if offered else "none",
                       max_tokens=settings.max_tokens, temperature=settings.temperature)


class Response:
    def __init__(self, generation: int, host: ResponseHost, services: ModelServices, tools: BuiltinTools,
                 history: list[ChatMessage], settings: ResponseSettings,
                 on_done: Callable[[Response], Awaitable[None]], *, tag: str | None = None,
                 message_id: str = "") -> None:
        self.generation = generation
        self.tag, self.message_id = tag, message_id
        self.host, self.services, self.tools, self.settings = host, services, tools, settings
        self.history = history  # system prompt + context, as the LLM will see it
        self.new_messages: list[ChatMessage] = []  # tool-call turns this response added
        self.full_text = ""
        self.reply_message_id: int | None = None
        self.sentences: list[SpokenSentence] = []
        self.audio_sent_ms = 0.0
        self.first_audio_at: float | None = None
        self.first_token_at: float | None = None
        self.failure: ServiceError | None = None
        self.tts_failed = False
        self.deferred_calls: list[ToolCall] = []  # client calls left for the client (end_on_client_tool)
        self.input_tokens = self.output_tokens = 0
        self.cached_tokens = 0  # of input_tokens, read from the LLM's KV cache
        self.finish_reason: str | None = None
        self.stage = "llm"  # the step the thinking side is in, named as error phases are
        self._paused = asyncio.Event()
        self._paused.set()  # set = playing
        self._client_calls: dict[str, asyncio.Future] = {}
        self._chunk_index = 0
        self._on_done = on_done
        self.task = asyncio.get_running_loop().create_task(self._run())

    # ---- control from the session -------------------------------------------------------

    def pause_audio(self) -> None:
        """A possible barge-in: hold audio until it is confirmed (cancel) or dismissed (resume)."""
        self._paused.clear()

    def resume_audio(self) -> None:
        self._paused.set()

    def deliver_tool_result(self, call_id: str, result: Any) -> bool:
        future = self._client_calls.get(call_id)
        if future is None or future.done():
            return False
        future.set_result(result)
        return True

    async def cancel(self, grace_s: float = CANCEL_GRACE_S) -> None:
        """Cancel and wait for the response to unwind, but never without bound: the session's one
        task calls this, and a stream that swallows a cancel would otherwise freeze the session."""
        for _ in range(CANCEL_ASKS):
            if self.task.done():
                break
            self.task.cancel()
            await asyncio.wait({self.task}, timeout=grace_s)
        if not self.task.done():
            logger.error("response %s did not stop after %d cancels; left to finish, its output dropped",
                         self.message_id, CANCEL_ASKS)
            return
        if not self.task.cancelled() and (error := self.task.exception()) is not None:
            logger.debug("cancelled response ended with %r", error)  # retrieved: no "never retrieved"

    def heard_text(self, now: float | None = None) -> str:
        """The reply cut to what can have been played: whole sentences, then a share of the current one."""
        if not self.settings.speak:
            return self.full_text.strip()  # text only: everything sent was shown
        if self.first_audio_at is None:
            return ""
        return self.text_at(((now or time.monotonic()) - self.first_audio_at) * 1000)

    def text_at(self, played_ms: float) -> str:
        """The words spoken in the first ``played_ms`` of this reply's audio (clamped to what was sent)."""
        if self.audio_sent_ms and played_ms >= self.audio_sent_ms and all(s.complete for s in self.sentences):
            return " ".join(s.text for s in self.sentences)
        played_ms = min(self.audio_sent_ms, played_ms)
        heard: list[str] = []
        for sentence in self.sentences:
            if sentence.sent_ms <= 0 or played_ms <= sentence.start_ms:
                break
            share = (played_ms - sentence.start_ms) / sentence.sent_ms
            words = sentence.text.split()
            if share >= 1 and sentence.complete:
                heard.append(sentence.text)
                continue
            # the current sentence: its words in proportion to its audio played so far
            estimate_total = sentence.sent_ms if sentence.complete else max(sentence.sent_ms, len(words) * 350)
            count = int(len(words) * min(1.0, (played_ms - sentence.start_ms) / estimate_total))
            if count:
                heard.append(" ".join(words[:count]))
            break
        return " ".join(heard)

    # ---- the pipeline ---------------------------------------------------------------------

    async def _run(self) -> None:
        sentences: asyncio.Queue[str | None] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        thinker = loop.create_task(self._think(sentences))
        speaker = loop.create_task(self._speak(sentences))
        try:
            # either side failing ends both: a TTS step that raises must not leave the LLM running
            done, _ = await asyncio.wait({thinker, speaker}, return_when=asyncio.FIRST_EXCEPTION)
            for task in (thinker, speaker):
                if task in done and task.exception() is not None:
                    raise task.exception()
            if not self.tts_failed and self.sentences:
                self.host.emit(AudioComplete(), self.generation)
        except ServiceError as error:
            self._fail(error, retryable=True)  # the reply failed as a whole: retry_turn asks again (Responder.last_input)
        except Exception as error:
            phase = "tts" if speaker.done() and not speaker.cancelled() and speaker.exception() is error \
                else self.stage
            logger.error("response %s: the %s step failed", self.message_id, phase, exc_info=error)
            detail = f"{type(error).__name__}: {error}"[:200]
            self._fail(ServiceError(phase, "internal_error", f"the {phase} step of the response failed ({detail})"))
        finally:
            for task in (thinker, speaker):
                task.cancel()
            await asyncio.gather(thinker, speaker, return_exceptions=True)
        await self._on_done(self)

    def _fail(self, error: ServiceError, retryable: bool = False) -> None:
        self.failure = error
        self.host.emit(ErrorEvent(error.message, error.phase, error.code, retryable=retryable), self.generation)

    async def _think(self, sentences: asyncio.Queue[str | None]) -> None:
        splitter = SentenceSplitter()
        messages = list(self.history)
        for round_index in range(self.settings.max_tool_rounds + 1):
            allow_tools = round_index < self.settings.max_tool_rounds
            self.stage = "llm"
            calls, text = await self._one_llm_round(messages, splitter, sentences, allow_tools)
            if not calls:
                break
            assistant = ChatMessage(role="assistant", content=text or None, tool_calls=calls)
            deferred = [c for c in calls if self._deferred(c)]
            ran = [c for c in calls if c not in deferred]
            self.stage = "tools"
            results = await self._run_tools(ran)
            tool_messages = [
                ChatMessage(role="tool", tool_call_id=call.id, content=json.dumps(result))
                for call, result in zip(ran, results)
            ]
            self.new_messages += [assistant, *tool_messages]
            messages += [assistant, *tool_messages]
            if deferred:
                for call in deferred:
                    await self.host.store_tool_call(call)
                    self.host.emit(ToolCallStarted(call.id, call.name, _parsed(call.arguments)), self.generation)
                self.deferred_calls = deferred
                break
        for sentence in splitter.flush():
            await sentences.put(sentence)
        await sentences.put(None)  # the speaker finishes what is queued, then ends
        self.full_text = self.full_text.strip()
        self.stage = "session"
        self.reply_message_id = await self.host.store_reply(self.full_text)
        self.host.emit(LlmComplete(self.full_text), self.generation)

    async def _run_tools(self, calls: list[ToolCall]) -> list[Any]:
        """Concurrently; if one raises, the others are cancelled (and say so in the store) before it propagates."""
        tasks = [asyncio.get_running_loop().create_task(self._run_tool(call)) for call in calls]
        try:
            return list(await asyncio.gather(*tasks))
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _deferred(self, call: ToolCall) -> bool:
        return self.settings.end_on_client_tool and not (self.settings.builtin_tools and self.tools.has(call.name))

    async def _one_llm_round(self, messages, splitter, sentences, allow_tools) -> tuple[list[ToolCall], str]:
        request = chat_request(self.settings, self.tools, messages, allow_tools)
        calls: list[ToolCall] = []
        text = ""
        async for event in self.services.chat(request):
            if isinstance(event, TextDelta) and event.text:
                if self.first_token_at is None:
                    self.first_token_at = time.time()
                text += event.text
                self.full_text += event.text
                self.host.emit(LlmToken(event.text), self.generation)
                for sentence in splitter.push(event.text):
                    await sentences.put(sentence)
            elif isinstance(event, ToolCallEvent):
                calls.append(event.call)
            elif isinstance(event, ChatDone):
                self.input_tokens += event.prompt_tokens
                self.cached_tokens += event.cached_tokens
                self.output_tokens += event.completion_tokens
                self.finish_reason = event.finish_reason
                break
        return calls, text

    async def _run_tool(self, call: ToolCall) -> Any:
        await self.host.store_tool_call(call)
        self.host.emit(ToolCallStarted(call.id, call.name, _parsed(call.arguments)), self.generation)
        status = "ok"
        try:
            if self.tools.has(call.name):
                result: Any = await self.tools.call(call.name, call.arguments)
            elif any(t.get("function", {}).get("name") == call.name for t in self.settings.client_tools):
                result = await self._client_tool(call)
            else:
                status, result = "error", {"error": f"unknown tool {call.name!r}"}
        except ToolError as error:
            status, result = "error", {"error": str(error)}
        except TimeoutError:
            status, result = "error", {"error": f"the client did not return a result for {call.name} in time"}
        except asyncio.CancelledError:  # a barge-in, a cancelled response, a sibling call that failed
            await self.host.finish_tool_call(call.id, {"error": "cancelled"}, "cancelled")
            raise
        except Exception as error:
            await self.host.finish_tool_call(call.id, {"error": f"the tool failed: {type(error).__name__}"}, "error")
            raise
        await self.host.finish_tool_call(call.id, result, status)
        self.host.emit(ToolCallFinished(call.id, call.name, result), self.generation)
        return result

    async def _client_tool(self, call: ToolCall) -> Any:
        future = asyncio.get_running_loop().create_future()
        self._client_calls[call.id] = future
        try:
            return await asyncio.wait_for(future, self.settings.client_tool_timeout_s)
        finally:
            self._client_calls.pop(call.id, None)

    async def _speak(self, sentences: asyncio.Queue[str | None]) -> None:
        while (text := await sentences.get()) is not None:
            if self.tts_failed or not self.settings.speak or not (words := spoken_form(text)):
                continue
            sentence = SpokenSentence(text, start_ms=self.audio_sent_ms)
            self.sentences.append(sentence)
            request = SynthesisRequest(text=words, sample_rate=self.settings.output_rate, voice=self.settings.voice)
            try:
                async for chunk in self.services.synthesize(request):
                    await self._send_audio(chunk, sentence)
                sentence.complete = True
                if sentence.sent_ms:
                    self.host.emit(SentenceSent(text, self.audio_sent_ms), self.generation)
            except ServiceError as error:  # TTS down: carry on as text only
                self.tts_failed = True
                self.host.emit(ErrorEvent(f"{error.message}; continuing without audio", error.phase, error.code),
                               self.generation)

    async def _send_audio(self, chunk: bytes, sentence: SpokenSentence) -> None:
        await self._paused.wait()
        if self.first_audio_at is None:
            await self.host.first_audio(self.generation)
            self.first_audio_at = time.monotonic()
        else:
            ahead_ms = self.audio_sent_ms - (time.monotonic() - self.first_audio_at) * 1000
            if ahead_ms > self.settings.playback_lead_ms:
                await asyncio.sleep((ahead_ms - self.settings.playback_lead_ms) / 1000)
            await self._paused.wait()
        duration_ms = len(chunk) / 2 / self.settings.output_rate * 1000
        self.host.emit(AudioOut(chunk, self._chunk_index), self.generation)
        self._chunk_index += 1
        self.audio_sent_ms += duration_ms
        sentence.sent_ms += duration_ms


def _parsed(arguments: str) -> Any:
    try:
        return json.loads(arguments or "{}")
    except json.JSONDecodeError:
        return arguments


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:16]}"
