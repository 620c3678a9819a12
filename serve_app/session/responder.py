"""Answering: one response at a time, from the user's words to the reply in the conversation.

A ``Response`` (serve_app/session/response.py) runs LLM -> clauses -> TTS -> paced audio; this
stage starts it (or adopts a speculative draft), queues a requested one behind inputs still being
transcribed or described, cancels it on a barge-in, and records it when it ends. It keeps recent
replies with their audio timing so a client can truncate them to what was heard.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from deployments.llm import ChatMessage, ToolCall
from serve_app.clients.models import ModelServices, ServiceError
from serve_app.metrics import TURN_METRICS
from serve_app.session.channel import SessionChannel
from serve_app.session.conversation import Conversation
from serve_app.session.events import (
    CreateResponse,
    ErrorEvent,
    Event,
    Interrupted,
    ReplyTruncated,
    ResponseEnded,
    ResponseStarted,
    State,
    StopSpeaking,
    TranscriptFinal,
    TruncateReply,
)
from serve_app.session.inbox import FirstAudio, PendingInput, ResponseFinished, new_message_id
from serve_app.session.options import SessionOptions
from serve_app.session.policy import ReplyPolicy, ResponseOverrides
from serve_app.session.response import Response, ResponseHost, ResponseSettings, chat_request
from serve_app.session.speculation import Draft
from serve_app.session.tools import BuiltinTools

logger = logging.getLogger(__name__)

KEPT_REPLIES = 16  # recent replies whose audio timing is kept, so a client can truncate them


class Responder:
    def __init__(self, channel: SessionChannel, conversation: Conversation, services: ModelServices,
                 tools: BuiltinTools, options: SessionOptions, *, inputs_pending: Callable[[], bool]) -> None:
        self.channel, self.conversation = channel, conversation
        self.services, self.tools, self.options = services, tools, options
        self.inputs_pending = inputs_pending  # turns or images not yet in the conversation
        self.replies = ReplyPolicy()
        self.response: Response | None = None
        self.queued: CreateResponse | None = None  # a requested response waiting for those inputs
        self.last_input: PendingInput | None = None  # the last turn's input, kept for retry_turn
        self.times: dict[str, float] = {}  # the current turn's milestones, for the store and metrics
        self.closing = False  # the client is gone: words still arriving are stored, not answered
        self._prefilling = False  # a prefill is in flight (serve_app/clients/models.py, ``prefill``)
        self._kept: OrderedDict[str, Response] = OrderedDict()

    @property
    def busy(self) -> bool:
        return self.response is not None

    def new_turn(self, **times: float) -> None:
        self.times = dict(times)

    def mark(self, milestone: str, at: float | None = None, *, keep_first: bool = False) -> None:
        if keep_first and milestone in self.times:
            return
        self.times[milestone] = at if at is not None else time.time()

    # ---- starting ------------------------------------------------------------------------

    async def user_turn(self, text: str, message_id: str = "", respond: bool = True,
                        draft: Draft | None = None) -> None:
        """The user's words join the conversation; ``draft`` is an answer started on them already."""
        await self.conversation.start_turn()
        await self.conversation.add("user", text, message_id)
        self.channel.emit(TranscriptFinal(text, message_id))
        self.last_input = PendingInput("llm")
        if (draft is not None and respond and not self.closing and self.queued is None
                and draft.response.generation == self.channel.generation + 1):
            await self._adopt(draft)
            return
        if draft is not None:
            await draft.cancel()
        if self.closing:
            return
        if respond or self.queued is not None:
            request, self.queued = self.queued, None
            await self.respond(request)
        else:
            await self.channel.set_state(State.LISTENING)

    def draft(self, text: str, host: ResponseHost) -> Response:
        """An answer to words not yet committed as a turn, with its output held by ``host``."""
        settings = self._settings(None)
        history = self.conversation.context.for_llm(settings.instructions,
                                                    pending=ChatMessage(role="user", content=text))
        return Response(self.channel.generation + 1, host, self.services, self.tools, history, settings,
                        on_done=self._done, message_id=new_message_id())

    async def _adopt(self, draft: Draft) -> None:
        """A draft becomes the response, as if ``respond`` had started it; then its held output flows."""
        response = draft.response
        self.channel.generation = response.generation
        await self.channel.set_state(State.THINKING)
        self.channel.emit(ResponseStarted(None, response.message_id), response.generation)
        self.response = response
        draft.release()  # after the switch: the held events carry this generation

    async def respond(self, request: CreateResponse | None = None) -> None:
        generation = self.channel.next_generation()
        await self.channel.set_state(State.THINKING)
        settings = self._settings(request)
        history = self.conversation.context.for_llm(settings.instructions)
        tag, message_id = (request.tag if request else None), new_message_id()
        self.channel.emit(ResponseStarted(tag, message_id), generation)
        self.response = Response(generation, self, self.services, self.tools, history, settings,
                                 on_done=self._done, tag=tag, message_id=message_id)

    def _settings(self, request: CreateResponse | None) -> ResponseSettings:
        once = (request.overrides if request else None) or ResponseOverrides()
        config, options, replies = self.conversation.config, self.options, self.replies
        instructions = once.instructions or config.instructions or options.instructions
        speak = once.speak if once.speak is not None else replies.speak
        default_tokens = options.spoken_reply_tokens if speak else options.max_response_tokens
        return ResponseSettings(
            instructions=instructions,
            output_rate=config.output_sample_rate,
            voice=once.voice or config.voice,
            max_tokens=once.max_tokens or replies.max_tokens or default_tokens,
            temperature=options.temperature,
            max_tool_rounds=options.max_tool_rounds,
            playback_lead_ms=options.playback_lead_ms,
            client_tool_timeout_s=options.client_tool_timeout_s,
            client_tools=once.tools if once.tools is not None else config.tools,
            speak=speak,
            builtin_tools=replies.builtin_tools,
            end_on_client_tool=replies.end_on_client_tool,
            tool_choice=once.tool_choice or replies.tool_choice,
        )

    async def request(self, request: CreateResponse) -> None:
        """A client asks for a response (it may have to wait for inputs still in flight)."""
        if self.response is not None or self.queued is not None:
            self.channel.error("a response is already in progress", "response", "response_in_progress",
                               ref=request.tag)
            return
        self.queued = request
        await self.start_queued()

    async def start_queued(self) -> None:
        """A requested response starts once the turns and images before it are in the conversation."""
        if self.queued is None or self.response is not None or self.inputs_pending() or self.closing:
            return
        request, self.queued = self.queued, None
        await self.conversation.start_turn()
        self.new_turn(transcript_at=time.time())
        await self.respond(request)

    # ---- while it runs -------------------------------------------------------------------

    async def on_first_audio(self, message: FirstAudio) -> None:
        if message.generation == self.channel.generation:
            self.mark("first_audio_at", keep_first=True)
            await self.channel.set_state(State.SPEAKING)
        message.done.set_result(None)

    def hold_audio(self) -> None:
        """Speech may be starting over the reply: stop sending audio until it is confirmed or dismissed."""
        if self.response is not None:
            self.response.pause_audio()

    def resume_audio(self) -> None:
        if self.response is not None:
            self.response.resume_audio()

    def deliver_tool_result(self, call_id: str, result: Any) -> bool:
        return self.response is not None and self.response.deliver_tool_result(call_id, result)

    # ---- ending --------------------------------------------------------------------------

    async def _done(self, response: Response) -> None:
        self.channel.submit(ResponseFinished(response))

    async def on_finished(self, response: Response) -> bool:
        """The response ended by itself; False if a barge-in had handled it already."""
        if response is not self.response:
            return False
        self.response = None
        try:
            await self._close(response)
        finally:
            await self.channel.set_state(State.LISTENING)  # whatever failed above, the next turn can come
        return True

    async def _close(self, response: Response) -> None:
        self._keep(response)
        context = self.conversation.context
        if response.failure is None:
            self.last_input = None
            if not response.deferred_calls:  # with deferred calls the text is on the tool-call message
                context.add(ChatMessage(role="assistant", content=response.full_text), response.message_id)
            self._prefill_if_moved(response)
        failure = response.failure
        status = "failed" if failure else "incomplete" if response.finish_reason == "length" else "completed"
        error = ErrorEvent(failure.message, failure.phase, failure.code) if failure else None
        self.channel.emit(ResponseEnded(response.tag, response.message_id, response.generation, status,
                                        input_tokens=response.input_tokens, output_tokens=response.output_tokens,
                                        error=error))
        await self._record(response, interrupted=False)

    def read_ahead(self) -> None:
        """Have the LLM read the conversation's prompt before the user's first words: a new session's
        instructions and tool schemas are ~440 tokens, 3-4 s on 2 cores, which its first turn paid."""
        settings = self._settings(None)
        self._prefill(settings, self.conversation.context.for_llm(settings.instructions), "session start")

    def _prefill_if_moved(self, response: Response) -> None:
        """Where the next turn would move the context window, move it now and have the LLM read the
        new prompt while this answer plays (serve_app/session/context.py, ``move_on_ahead``)."""
        context, instructions = self.conversation.context, response.settings.instructions
        if context.move_on_ahead(instructions):
            self._prefill(response.settings, context.for_llm(instructions), "window moved")

    def _prefill(self, settings: ResponseSettings, messages: list[ChatMessage], why: str) -> None:
        if self._prefilling:  # one at a time: a client updating its session in a loop gets no more
            return
        request = chat_request(settings, self.tools, messages)

        async def prefill() -> None:
            try:
                read = await self.services.prefill(request)
                logger.debug("%s: the LLM read %d prompt tokens ahead", why, read)
            except ServiceError as error:  # only a head start: the next turn reads the prompt itself
                logger.info("prefill (%s) failed: %s", why, error.message)
            finally:
                self._prefilling = False

        self._prefilling = True
        self.channel.spawn(prefill())

    def _keep(self, response: Response) -> None:
        """Its tool-call turns join the context, named by call id; its audio timing is kept for truncation."""
        context = self.conversation.context
        context.messages += response.new_messages
        context.bound()
        for message in response.new_messages:
            for call in message.tool_calls or []:
                context.name(message, call.id)
        if response.deferred_calls:
            context.name(response.new_messages[-1], response.message_id)
        self._kept[response.message_id] = response
        while len(self._kept) > KEPT_REPLIES:
            self._kept.popitem(last=False)

    async def barge_in(self, reason: str) -> None:
        """Stop talking now: tell the client first, then cancel downstream work and cut the reply."""
        if self.response is None:
            if self.channel.state in (State.TRANSCRIBING, State.THINKING):
                await self.channel.set_state(State.LISTENING)
            return
        self.mark("barge_in_at", keep_first=True)
        generation = self.channel.next_generation()  # everything the old response still emits is dropped
        self.channel.outbox.drop_generations_below(generation)
        self.channel.emit(Interrupted(reason))
        self.channel.emit(StopSpeaking())
        self.mark("stopped_at")
        await self.cancel(reason)
        await self.channel.set_state(State.LISTENING)

    async def cancel(self, reason: str | None) -> None:
        """Cut the response to what was heard; that is what the conversation remembers of it."""
        response, self.response = self.response, None
        await response.cancel()
        heard = response.heard_text()
        self._keep(response)
        self.conversation.context.add(ChatMessage(role="assistant", content=heard), response.message_id)
        self.last_input = None
        try:
            if response.reply_message_id is not None:
                await self.conversation.update_reply(response.reply_message_id, content=heard, status="interrupted",
                                                     full_content=response.full_text)
            else:
                response.reply_message_id = await self.conversation.store_reply(heard, status="interrupted")
                if response.full_text != heard:
                    await self.conversation.update_reply(response.reply_message_id, full_content=response.full_text)
        finally:  # a client waiting for the response's end gets it even if the store failed
            self.channel.emit(ResponseEnded(response.tag, response.message_id, response.generation, "cancelled",
                                            reason, input_tokens=response.input_tokens,
                                            output_tokens=response.output_tokens))
        await self._record(response, interrupted=True)

    async def _record(self, response: Response, interrupted: bool) -> None:
        times = dict(self.times)
        if response.first_token_at:
            times["first_token_at"] = response.first_token_at
        await self.conversation.record_turn(interrupted, response.input_tokens, response.cached_tokens, times)
        TURN_METRICS.observe(times)
        TURN_METRICS.prompt_tokens.labels(kind="cached").inc(response.cached_tokens)
        TURN_METRICS.prompt_tokens.labels(kind="evaluated").inc(response.input_tokens - response.cached_tokens)

    async def truncate(self, command: TruncateReply) -> None:
        """The client played only part of a reply: its text (stored and in context) is cut to that."""
        if self.response is not None and self.response.message_id == command.message_id:
            await self.barge_in("manual")  # truncating the reply being spoken stops it first
        response = self._kept.get(command.message_id)
        message = self.conversation.context.find(command.message_id)
        if response is None or message is None:
            self.channel.error(f"no spoken reply {command.message_id!r} to truncate", "session", "unknown_message",
                               ref=command.message_id)
            return
        # rounded up: cut at the int below a reply's last sample, its last piece would lose a word
        audio_ms = max(0, min(command.audio_ms, math.ceil(response.audio_sent_ms)))
        text = response.text_at(audio_ms)
        message.content = text
        if response.reply_message_id is not None:
            status = "complete" if text == response.full_text else "interrupted"
            await self.conversation.update_reply(response.reply_message_id, content=text, status=status,
                                                 full_content=response.full_text)
        self.channel.emit(ReplyTruncated(command.message_id, audio_ms, text))

    # ---- what a response asks of the session (ResponseHost) ------------------------------

    def emit(self, event: Event, generation: int) -> None:
        self.channel.emit(event, generation)

    async def first_audio(self, generation: int) -> None:
        done = asyncio.get_running_loop().create_future()
        self.channel.submit(FirstAudio(generation, done))
        await done

    async def store_tool_call(self, call: ToolCall) -> None:
        await self.conversation.store_tool_call(call)

    async def finish_tool_call(self, call_id: str, result: Any, status: str) -> None:
        await self.conversation.finish_tool_call(call_id, result, status)

    async def store_reply(self, text: str) -> int:
        return await self.conversation.store_reply(text)
