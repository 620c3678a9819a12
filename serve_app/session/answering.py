"""Turns and responses: starting, queueing, finishing and cancelling a reply, barge-in, retry."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from deployments.llm import ChatMessage, ToolCall
from serve_app.metrics import TURN_METRICS
from serve_app.session.events import (
    CreateResponse,
    ErrorEvent,
    Interrupted,
    ResponseEnded,
    ResponseStarted,
    State,
    StopSpeaking,
    TranscriptFinal,
)
from serve_app.session.inbox import FirstAudio, PendingInput, ResponseFinished, new_message_id
from serve_app.session.policy import ResponseOverrides
from serve_app.session.response import Response, ResponseSettings

KEPT_REPLIES = 16  # recent replies whose audio timing is kept, so a client can truncate them


class Answering:
    """Part of Session (serve_app/session/engine.py); the state it uses is made in Session.__init__."""

    async def _on_user_text(self, text: str) -> None:
        text = text.strip()
        if not text:
            self.error("user_message text is empty", "session", "empty_message")
            return
        await self._drop_speculation("user_text")
        if self.response is not None:
            await self._barge_in("manual")
        self._turn_times = {"transcript_at": time.time()}
        await self._user_turn(text)

    async def _user_turn(self, text: str, message_id: str = "", respond: bool = True,
                         draft: Response | None = None) -> None:
        """The user's words join the conversation; ``draft`` is an answer started on them already."""
        self.turn_id = await self.store.start_turn(self.session_id)
        await self.store.add_message(self.session_id, "user", text, turn_id=self.turn_id)
        self.context.add(ChatMessage(role="user", content=text), message_id)
        self.emit(TranscriptFinal(text, message_id))
        self._pending = PendingInput("llm")
        if draft is not None and respond and self._queued is None and draft.generation == self.generation + 1:
            await self._adopt(draft)
            return
        if draft is not None:
            await draft.cancel()
        if respond or self._queued is not None:
            request, self._queued = self._queued, None
            await self._respond(request)
        else:
            await self._set_state(State.LISTENING)

    def _draft_response(self, text: str, host) -> Response:
        """An answer to words not yet committed as a turn, with its output held by ``host``."""
        settings = self._settings(None)
        history = self.context.for_llm(settings.instructions, pending=ChatMessage(role="user", content=text))
        return Response(self.generation + 1, host, self.services, self.tools, history, settings,
                        on_done=self._response_done, message_id=new_message_id())

    async def _adopt(self, draft: Response) -> None:
        """A released draft becomes the response, as if ``_respond`` had started it."""
        self.generation = draft.generation
        await self._set_state(State.THINKING)
        self.emit(ResponseStarted(None, draft.message_id), self.generation)
        self.response = draft

    async def _respond(self, request: CreateResponse | None = None) -> None:
        self.generation += 1
        await self._set_state(State.THINKING)
        settings = self._settings(request)
        history = self.context.for_llm(settings.instructions)
        tag, message_id = (request.tag if request else None), new_message_id()
        self.emit(ResponseStarted(tag, message_id), self.generation)
        self.response = Response(self.generation, self, self.services, self.tools, history, settings,
                                 on_done=self._response_done, tag=tag, message_id=message_id)

    def _settings(self, request: CreateResponse | None) -> ResponseSettings:
        once = (request.overrides if request else None) or ResponseOverrides()
        instructions = once.instructions or self.config.instructions or self.options.instructions
        speak = once.speak if once.speak is not None else self.replies.speak
        default_tokens = self.options.spoken_reply_tokens if speak else self.options.max_response_tokens
        return ResponseSettings(
            instructions=instructions,
            output_rate=self.config.output_sample_rate,
            voice=once.voice or self.config.voice,
            max_tokens=once.max_tokens or self.replies.max_tokens or default_tokens,
            temperature=self.options.temperature,
            max_tool_rounds=self.options.max_tool_rounds,
            playback_lead_ms=self.options.playback_lead_ms,
            client_tool_timeout_s=self.options.client_tool_timeout_s,
            client_tools=once.tools if once.tools is not None else self.config.tools,
            speak=speak,
            builtin_tools=self.replies.builtin_tools,
            end_on_client_tool=self.replies.end_on_client_tool,
            tool_choice=once.tool_choice or self.replies.tool_choice,
        )

    async def _on_create_response(self, request: CreateResponse) -> None:
        if self.response is not None or self._queued is not None:
            self.error("a response is already in progress", "response", "response_in_progress", ref=request.tag)
            return
        self._queued = request
        await self._start_queued()

    async def _start_queued(self) -> None:
        """A requested response starts once the turns and images before it are in the conversation."""
        if self._queued is None or self.response is not None or self._transcribing or self._describing:
            return
        request, self._queued = self._queued, None
        self.turn_id = await self.store.start_turn(self.session_id)
        self._turn_times = {"transcript_at": time.time()}
        await self._respond(request)

    async def _response_done(self, response: Response) -> None:
        self.submit(ResponseFinished(response))

    async def _on_response_finished(self, response: Response) -> None:
        if response is not self.response:
            return  # already handled by a barge-in
        self.response = None
        self._keep_reply(response)
        if response.failure is None:
            self._pending = None
            if not response.deferred_calls:  # with deferred calls the text is on the tool-call message
                self.context.add(ChatMessage(role="assistant", content=response.full_text), response.message_id)
        failure = response.failure
        status = "failed" if failure else "incomplete" if response.finish_reason == "length" else "completed"
        error = ErrorEvent(failure.message, failure.phase, failure.code) if failure else None
        self.emit(ResponseEnded(response.tag, response.message_id, response.generation, status,
                                input_tokens=response.input_tokens, output_tokens=response.output_tokens,
                                error=error))
        await self._record_turn(response, interrupted=False)
        await self._set_state(State.LISTENING)
        if self._respond_after and self.turns.auto_respond and self._queued is None:
            self._respond_after = False
            await self._respond()
        await self._start_queued()

    def _keep_reply(self, response: Response) -> None:
        """Its tool-call turns join the context, named by call id; its audio timing is kept for truncation."""
        self.context.messages += response.new_messages
        for message in response.new_messages:
            for call in message.tool_calls or []:
                self.context.name(message, call.id)
        if response.deferred_calls:
            self.context.name(response.new_messages[-1], response.message_id)
        self._replies[response.message_id] = response
        while len(self._replies) > KEPT_REPLIES:
            self._replies.popitem(last=False)

    async def _barge_in(self, reason: str) -> None:
        """Stop talking now: tell the client first, then cancel downstream work and cut the reply."""
        if self.response is None:
            if self.state in (State.TRANSCRIBING, State.THINKING):
                await self._set_state(State.LISTENING)
            return
        self._turn_times.setdefault("barge_in_at", time.time())
        self.generation += 1  # everything the old response still emits is dropped from here on
        self.outbox.drop_generations_below(self.generation)
        self.emit(Interrupted(reason))
        self.emit(StopSpeaking())
        self._turn_times["stopped_at"] = time.time()
        await self._cancel_response(reason)
        await self._set_state(State.LISTENING)

    async def _cancel_response(self, reason: str | None) -> None:
        response, self.response = self.response, None
        await response.cancel()
        heard = response.heard_text()
        self._keep_reply(response)
        self.context.add(ChatMessage(role="assistant", content=heard), response.message_id)
        if response.reply_message_id is not None:
            await self.store.update_message(response.reply_message_id, content=heard, status="interrupted",
                                            full_content=response.full_text)
        else:
            stored = await self.store.add_message(self.session_id, "assistant", heard, status="interrupted",
                                                  turn_id=self.turn_id)
            response.reply_message_id = stored.id
            if response.full_text != heard:
                await self.store.update_message(stored.id, full_content=response.full_text)
        self._pending = None
        self.emit(ResponseEnded(response.tag, response.message_id, response.generation, "cancelled", reason,
                                input_tokens=response.input_tokens, output_tokens=response.output_tokens))
        await self._record_turn(response, interrupted=True)

    async def _record_turn(self, response: Response, interrupted: bool) -> None:
        times = dict(self._turn_times)
        if response.first_token_at:
            times["first_token_at"] = response.first_token_at
        if self.turn_id is not None:
            await self.store.record_turn(self.turn_id, interrupted=interrupted, prompt_tokens=response.input_tokens,
                                         cached_tokens=response.cached_tokens, **times)
        TURN_METRICS.observe(times)
        TURN_METRICS.prompt_tokens.labels(kind="cached").inc(response.cached_tokens)
        TURN_METRICS.prompt_tokens.labels(kind="evaluated").inc(response.input_tokens - response.cached_tokens)

    async def _retry(self) -> None:
        pending = self._pending
        if pending is None or self.response is not None:
            self.error("there is no failed turn to retry", "session", "nothing_to_retry")
            return
        if pending.kind == "stt" and pending.audio is not None:
            self._utterance += 1
            await self._set_state(State.TRANSCRIBING)
            self._spawn(self._transcribe(self._utterance, pending.audio, partial=False))
        else:
            await self._respond()

    # ---- what the response asks of the session (ResponseHost) ------------------------------

    async def first_audio(self, generation: int) -> None:
        done = asyncio.get_running_loop().create_future()
        self.submit(FirstAudio(generation, done))
        await done

    async def store_tool_call(self, call: ToolCall) -> None:
        await self.store.add_tool_call(self.session_id, call.id, call.name, call.arguments)

    async def finish_tool_call(self, call_id: str, result: Any, ok: bool) -> None:
        await self.store.finish_tool_call(call_id, json.dumps(result, default=str), "ok" if ok else "error")

    async def store_reply(self, text: str) -> int:
        message = await self.store.add_message(self.session_id, "assistant", text, turn_id=self.turn_id)
        return message.id
