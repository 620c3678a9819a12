"""llama.cpp in process: the embedded SmolLM2-135M by default, any chat GGUF by path.

Generation blocks, so it runs on one dedicated worker thread (a ``Llama`` is not re-entrant) and
feeds the event loop through a queue; a stop event checked per token ends it when the stream is
closed. Tool calls use the Hermes convention with grammar-constrained decoding (``tool_grammar``);
a reply that may be text or a call is decoded free under a logit mask and only falls back to the
grammar once it opens a call (``text_guard``); with ``embedding`` (``tool_router``) or ``two_step``
(``tool_decision``) the tool a message needs, or none, is decided first, and the model only then
writes that call's arguments.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import functools
import logging
import threading
from collections.abc import AsyncIterator, Callable, Generator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import llama_cpp
from jinja2 import TemplateError
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from deployments.embedded import smollm2_gguf
from deployments.errors import ModelInputError
from deployments.llm import (
    ChatDone,
    ChatRequest,
    LlmEvent,
    LlmOptions,
    TextDelta,
    ToolCallEvent,
    chosen_function,
    offered_tools,
)
from deployments.llm_prompt_states import PromptStates
from deployments.text_guard import TextGuard, TokenClasses
from deployments.tool_decision import ANSWER, MAX_CHOICES, ChannelChooser, Decision, choice_context, decide
from deployments.tool_grammar import (
    ReplyReader,
    ToolMode,
    answered_calls,
    call_key,
    has_tool_markup,
    plain_messages,
    tool_call_grammar,
    tools_system_prompt,
)
from deployments.tool_router import ToolRouter

logger = logging.getLogger(__name__)
_END = object()
_MARK = "\x00message\x00"  # where the user's message goes in a rendered choice prompt


@dataclass
class _Generation:
    """One reply being decoded on the worker thread."""

    prompt_tokens: list[int]
    max_tokens: int
    temperature: float
    grammar: llama_cpp.LlamaGrammar | None  # constrains the reply from its first token
    guard: TextGuard | None = None  # or: the reply runs free under this mask ...
    call_grammar: llama_cpp.LlamaGrammar | None = None  # ... and again under this if it opens a call
    stop: threading.Event = field(default_factory=threading.Event)
    completion_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens the KV cache already held
    finish_reason: str = "length"


def _chatml(messages: list[dict[str, str]]) -> str:
    turns = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return turns + "<|im_start|>assistant\n"


class LlamaCppBackend:
    def __init__(self, options: LlmOptions) -> None:
        path = Path(options.model_path) if options.model_path else smollm2_gguf()
        if not path.is_file():
            raise FileNotFoundError(f"GGUF model file {path} does not exist")
        self.options = options
        self.model_name = path.name.removesuffix(".gguf")
        self.llm = llama_cpp.Llama(model_path=str(path), n_ctx=options.n_ctx, n_threads=options.n_threads,
                                   n_threads_batch=options.n_threads_batch, n_gpu_layers=options.n_gpu_layers,
                                   verbose=False)
        self._states = PromptStates(self.llm, options.prompt_cache_mb * 1024 * 1024)
        self._vocab = self.llm._model.vocab  # raw handle for eog/control checks and grammar validation
        self._token_classes = TokenClasses(self.llm)
        template = self.llm.metadata.get("tokenizer.chat_template") if options.chat_format == "gguf" else None
        self._template = None
        if template:
            self._template = Jinja2ChatFormatter(
                template,
                eos_token=self.llm.detokenize([self.llm.token_eos()], special=True).decode("utf-8", "replace"),
                bos_token=self.llm.detokenize([self.llm.token_bos()], special=True).decode("utf-8", "replace"),
            )
        self._chooser = ChannelChooser(self.llm) if options.tool_decision == "two_step" else None
        self._router = ToolRouter(options.router_margin) if options.tool_decision == "embedding" else None
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llama-cpp")
        self._turn = asyncio.Lock()
        self._running: asyncio.Future | None = None

    @property
    def generating(self) -> bool:
        """True while the worker thread is decoding a reply."""
        return self._running is not None and not self._running.done()

    def info(self) -> dict[str, Any]:
        return {"n_ctx": self.options.n_ctx, "chat_template": "gguf" if self._template else "chatml",
                "tool_calls": "hermes+grammar", "tool_decision": self.options.tool_decision}

    def _render(self, request: ChatRequest, tools: list[dict], mode: ToolMode) -> list[int]:
        return self._tokens(self._plain(request.messages, tools, mode))

    @staticmethod
    def _plain(messages: list, tools: list[dict], mode: ToolMode) -> list[dict[str, str]]:
        system = None
        if mode != "text":
            first = messages[0]
            system = tools_system_prompt(first.content if first.role == "system" else None, tools)
        return plain_messages(messages, system)

    def _prompt_text(self, messages: list[dict[str, str]]) -> str:
        if self._template is None:
            return _chatml(messages)
        try:
            return self._template(messages=messages).prompt
        except TemplateError as error:
            raise ModelInputError(f"the model's chat template refused the conversation: {error}",
                                  "invalid_request") from None

    def _tokens(self, messages: list[dict[str, str]]) -> list[int]:
        prompt = self._prompt_text(messages)
        return self.llm.tokenize(prompt.encode("utf-8"), add_bos=self._template is None, special=True)

    def _choice_prompts(self, request: ChatRequest, tools: list[dict],
                        allow_answer: bool) -> tuple[list[str], list[list[int]], list[int]]:
        """The choices' names, each choice's description as a system turn, and the user's message
        with its end of turn, all in the model's chat format."""
        choices: list[dict | None] = [*tools, *([None] if allow_answer else [])]
        names = [t["function"]["name"] if t else ANSWER for t in choices]
        contexts, end = [], ""
        for choice in choices:
            prompt = self._prompt_text([{"role": "system", "content": choice_context(choice)},
                                        {"role": "user", "content": _MARK}])
            head, end = prompt.split(_MARK, 1)
            contexts.append(self.llm.tokenize(head.encode("utf-8"), add_bos=self._template is None, special=True))
        text = (request.messages[-1].content or "").strip()
        body = self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)
        closed = self.llm.tokenize((text + end).encode("utf-8"), add_bos=False, special=True)
        return names, contexts, closed[: len(body) + 1]

    def _decide(self, names: list[str], contexts: list[list[int]], message: list[int]) -> Decision:
        """Worker thread: which of ``names`` the user's message needs."""
        return decide(names, self._chooser.score(contexts, message), self.options.tool_margin)

    async def _decision(self, request: ChatRequest, tools: list[dict], allow_answer: bool) -> Decision | None:
        """Which tool the user's last message needs (``Decision.tool`` None: none); None: no decision made."""
        loop = asyncio.get_running_loop()
        if self._router is not None:
            return await loop.run_in_executor(self._worker, self._router.decide, tools,
                                              request.messages[-1].content or "", allow_answer)
        if len(tools) >= MAX_CHOICES:
            return None
        names, contexts, message = self._choice_prompts(request, tools, allow_answer)
        return await loop.run_in_executor(self._worker, self._decide, names, contexts, message)

    def _call_budget(self, tool: dict, message: str) -> int:
        """Tokens a call to ``tool`` whose values come from ``message`` can need: its markup, name and
        keys, and values of twice the message's length. A small model can run on inside a string
        to the end of any budget; this ends it while an answer in words is still quick."""
        function = tool["function"]
        keys = "".join(f'"{key}": , ' for key in (function.get("parameters") or {}).get("properties", {}))
        frame = f'<tool_call>\n{{"name": "{function["name"]}", "arguments": {{{keys}}}}}\n</tool_call>'
        count = len(self.llm.tokenize(frame.encode("utf-8"), add_bos=False, special=False))
        return count + 2 * len(self.llm.tokenize(message.encode("utf-8"), add_bos=False, special=False)) + 8

    def _grammar(self, text: str | None) -> llama_cpp.LlamaGrammar | None:
        if text is None:
            return None
        # A grammar llama.cpp cannot parse would reach the sampler as a null pointer: check it here.
        sampler = llama_cpp.llama_sampler_init_grammar(self._vocab, text.encode("utf-8"), b"root")
        if not sampler:
            raise ModelInputError("the tools' parameter schemas do not compile to a grammar", "invalid_tool_schema")
        llama_cpp.llama_sampler_free(sampler)
        return llama_cpp.LlamaGrammar.from_string(text, verbose=False)

    def _prompt(self, request: ChatRequest) -> tuple[list[dict], ToolMode, list[int]]:
        """The tools offered, how a reply may use them, and the prompt that offers them."""
        tools = offered_tools(request)
        mode: ToolMode = "text" if not tools else "auto" if request.tool_choice == "auto" else "required"
        return tools, mode, self._render(request, tools, mode)

    async def prefill(self, request: ChatRequest) -> int:
        _, _, prompt_tokens = self._prompt(request)
        if len(prompt_tokens) >= self.options.n_ctx:
            return 0
        # No turn lock: the one worker thread already runs it between replies, never inside one's
        # decode, and a prefill cut off with its event loop must not leave a lock held for the next.
        return await asyncio.get_running_loop().run_in_executor(self._worker, self._read, prompt_tokens)

    def _read(self, prompt_tokens: list[int]) -> int:
        """Worker thread: evaluate the prompt (generate evaluates it before its first token) and keep it."""
        cached = self._states.prepare(prompt_tokens)
        tokens = self.llm.generate(prompt_tokens, temp=0.0)
        try:
            next(tokens, None)
        finally:
            tokens.close()
            self._states.save()
        return len(prompt_tokens) - cached

    def _decode(self, job: _Generation, emit: Callable[[object], None]) -> None:
        """Worker thread: sample tokens until end of turn, the token budget, or the stop event."""
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        job.cached_tokens = self._states.prepare(job.prompt_tokens)
        tokens = self._sampled(job)
        try:
            for token in tokens:
                if job.stop.is_set():
                    job.finish_reason = "cancelled"
                    break
                if llama_cpp.llama_vocab_is_eog(self._vocab, token) or llama_cpp.llama_vocab_is_control(
                        self._vocab, token):
                    job.finish_reason = "stop"
                    break
                job.completion_tokens += 1
                piece = decoder.decode(self.llm.detokenize([token]))
                if piece:
                    emit(piece)
                if job.completion_tokens >= job.max_tokens:
                    break
            if tail := decoder.decode(b"", final=True):
                emit(tail)
        finally:
            tokens.close()
            self._states.save()
            emit(_END)

    def _sampled(self, job: _Generation) -> Generator[int, None, None]:
        """The reply's tokens: under its grammar, or free under its guard until it opens a call."""
        if job.guard is None:
            yield from self.llm.generate(job.prompt_tokens, temp=job.temperature, grammar=job.grammar)
            return
        free = self.llm.generate(job.prompt_tokens, temp=job.temperature,
                                 logits_processor=llama_cpp.LogitsProcessorList([job.guard]))
        try:
            first = next(free, None)
            if first is None:
                return
            if job.call_grammar is None or not self._token_classes.opens_call(first):
                yield first
                yield from free
                return
        finally:
            free.close()
        # the model opened a call: decode it again under the grammar that keeps it well-formed
        yield from self.llm.generate(job.prompt_tokens, temp=job.temperature, grammar=job.call_grammar)

    def _job(self, prompt_tokens: list[int], budget: int, temperature: float, tools: list[dict],
             mode: ToolMode, max_calls: int, guarded: bool) -> _Generation:
        """How to decode a reply: a call only under its grammar; text (or text or a call) under a guard.

        ``guarded``: the reply must keep to the text rule (tools are offered, or the conversation
        holds tool markup a small model would echo).
        """
        call_grammar = self._grammar(tool_call_grammar(tools, mode, max_calls))
        if mode == "required":
            return _Generation(prompt_tokens, budget, temperature, call_grammar)
        if not guarded:  # no tools, no tool markup: nothing to keep the reply from
            return _Generation(prompt_tokens, budget, temperature, None)
        guard = TextGuard(self._token_classes, len(prompt_tokens), calls_allowed=call_grammar is not None)
        return _Generation(prompt_tokens, budget, temperature, None, guard, call_grammar)

    async def _reply_text(self, job: _Generation, reader: ReplyReader) -> AsyncIterator[TextDelta]:
        """Run ``job`` on the worker thread, yielding its text as it comes; closing stops the thread."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue()
        emit = functools.partial(loop.call_soon_threadsafe, queue.put_nowait)
        self._running = running = loop.run_in_executor(self._worker, self._decode, job, emit)
        try:
            while (piece := await queue.get()) is not _END:
                if text := reader.feed(piece):
                    yield TextDelta(text=text)
            await running  # re-raises what the worker raised
        finally:
            job.stop.set()
            await asyncio.wait([running])

    async def chat(self, request: ChatRequest) -> AsyncIterator[LlmEvent]:
        if request.model not in (None, self.model_name):
            raise ModelInputError(f"this service runs {self.model_name!r}, not {request.model!r}", "unknown_model")
        tools, mode, prompt_tokens = self._prompt(request)
        room = self.options.n_ctx - len(prompt_tokens)
        if room < 1:
            raise ModelInputError(f"the conversation is {len(prompt_tokens)} tokens; the context holds "
                                  f"{self.options.n_ctx}", "context_length_exceeded")
        guarded = bool(tools) or has_tool_markup(request.messages)
        budget = min(request.max_tokens, room)
        reply_tools, reply_mode, temperature, reply_budget = tools, mode, request.temperature, budget
        decides_first = (self.options.tool_decision in ("embedding", "two_step") and mode != "text"
                         and chosen_function(request) is None)
        async with self._turn:
            decision = None
            if decides_first and request.messages[-1].role == "tool":
                # a small model only repeats the call it just made: with its result in hand, it answers
                reply_tools, reply_mode = [], "text"
            elif decides_first and request.messages[-1].role == "user":
                decision = await self._decision(request, tools, mode == "auto")
            if decision is not None:
                logger.debug("tool decision %s from %s", decision.tool, decision.scores)
                if decision.tool is None:
                    reply_tools, reply_mode = [], "text"
                else:
                    # the arguments are read off the conversation, not invented: decode greedily
                    reply_tools = [t for t in tools if t["function"]["name"] == decision.tool]
                    reply_mode, temperature = "required", 0.0
                    reply_budget = min(budget, self._call_budget(reply_tools[0], request.messages[-1].content or ""))
            max_calls = self.options.max_tool_calls if reply_tools is tools else 1
            job = self._job(prompt_tokens, reply_budget, temperature, reply_tools, reply_mode, max_calls, guarded)
            reader = ReplyReader(reply_tools, reply_mode)
            async with contextlib.aclosing(self._reply_text(job, reader)) as deltas:
                async for delta in deltas:
                    yield delta
            calls, used, cached = reader.calls(), job.completion_tokens, job.cached_tokens
            answered = answered_calls(request.messages)
            echoed = calls and all(call_key(call) in answered for call in calls)
            unwritten = not calls and decision is not None and decision.tool is not None
            if mode == "auto" and (echoed or unwritten):
                # Small models echo the call whose result they were just given, or run on inside the
                # arguments of the call decided for them until the budget ends; answer in words instead.
                job, calls = self._job(prompt_tokens, budget, request.temperature, [], "text", 1, True), []
                async with contextlib.aclosing(self._reply_text(job, ReplyReader(tools, "text"))) as deltas:
                    async for delta in deltas:
                        yield delta
                used += job.completion_tokens
            for call in calls:
                yield ToolCallEvent(call=call)
            finish = "tool_calls" if calls else job.finish_reason
            yield ChatDone(finish_reason=finish, prompt_tokens=len(prompt_tokens), completion_tokens=used,
                           cached_tokens=cached)
