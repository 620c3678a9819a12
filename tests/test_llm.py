"""LLM service: the embedded SmolLM2 through llama.cpp, Ollama against the fake server, OpenAI stream assembly."""

from __future__ import annotations

import asyncio
import json
import time

import jsonschema
import pytest
from openai.types.chat import ChatCompletionChunk

from deployments.errors import ModelInputError
from deployments.llm import (
    ChatDone,
    ChatMessage,
    LanguageModel,
    LlmOptions,
    TextDelta,
    ToolCall,
    ToolCallEvent,
)
from deployments.llm_openai import ChunkAssembler
from deployments.text_guard import TokenClasses
from deployments.tool_decision import ANSWER_CONTEXT, choice_context
from deployments.tool_grammar import ReplyReader, parse_tool_calls, plain_messages
from tests.fake_ollama import FakeReply

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City name"}},
                   "required": ["city"]}}}
TIMER = {"type": "function", "function": {
    "name": "set_timer", "description": "Start a countdown timer",
    "parameters": {"type": "object", "properties": {"minutes": {"type": "integer"}}, "required": ["minutes"]}}}
PARIS = [{"role": "user", "content": "What is the weather in Paris right now?"}]
STORY = [{"role": "user", "content": "Tell me a long story about a brave little cat."}]


async def collect(stream) -> list:
    return [event async for event in stream]


def texts(events) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def assert_one_done_last(events) -> ChatDone:
    assert [type(e) for e in events].count(ChatDone) == 1
    assert isinstance(events[-1], ChatDone)
    return events[-1]


@pytest.fixture
def smollm():
    return LanguageModel.func_or_class()


@pytest.fixture
def one_pass_smollm():
    """The embedded model choosing between text and a call in one constrained reply."""
    return LanguageModel.func_or_class(LlmOptions(tool_decision="one_pass"))


@pytest.fixture(scope="module")
def shared_smollm():
    """For requests refused before decoding starts (they never take the model's turn lock)."""
    return LanguageModel.func_or_class()


# --- embedded SmolLM2 via llama.cpp -------------------------------------------------------------

async def test_embedded_model_streams_text_deltas_then_one_done_with_token_counts(smollm):
    events = await collect(smollm.chat({"messages": [{"role": "user", "content": "Say hello in one sentence."}],
                                        "max_tokens": 24}))
    deltas = [e for e in events if isinstance(e, TextDelta)]
    done = assert_one_done_last(events)
    assert len(deltas) >= 3 and texts(events).strip()
    assert done.finish_reason in ("stop", "length")
    assert done.prompt_tokens > 5 and len(deltas) <= done.completion_tokens <= 24


async def test_required_tool_choice_gives_a_schema_valid_weather_call(smollm):
    events = await collect(smollm.chat({"messages": PARIS, "tools": [WEATHER], "tool_choice": "required",
                                        "temperature": 0.0, "max_tokens": 64}))
    calls = [e.call for e in events if isinstance(e, ToolCallEvent)]
    done = assert_one_done_last(events)
    assert done.finish_reason == "tool_calls" and not texts(events)
    assert len(calls) == 1 and calls[0].name == "get_weather" and calls[0].id.startswith("call_")
    arguments = json.loads(calls[0].arguments)
    jsonschema.validate(arguments, WEATHER["function"]["parameters"])
    assert "paris" in arguments["city"].lower()


async def test_named_tool_choice_forces_that_function_with_typed_arguments(smollm):
    events = await collect(smollm.chat({
        "messages": [{"role": "user", "content": "Set a timer for 5 minutes."}], "tools": [WEATHER, TIMER],
        "tool_choice": {"type": "function", "function": {"name": "set_timer"}}, "temperature": 0.0}))
    calls = [e.call for e in events if isinstance(e, ToolCallEvent)]
    assert [c.name for c in calls] == ["set_timer"]
    arguments = json.loads(calls[0].arguments)
    jsonschema.validate(arguments, TIMER["function"]["parameters"])
    assert arguments["minutes"] == 5


@pytest.mark.parametrize("decision", ["embedding", "two_step", "one_pass"])
async def test_auto_replies_are_plain_text_or_well_formed_calls(decision):
    model = LanguageModel.func_or_class(LlmOptions(tool_decision=decision))
    for _ in range(3):
        events = await collect(model.chat({"messages": PARIS, "tools": [WEATHER], "max_tokens": 40}))
        assert_one_done_last(events)
        calls = [e.call for e in events if isinstance(e, ToolCallEvent)]
        for call in calls:
            jsonschema.validate(json.loads(call.arguments), WEATHER["function"]["parameters"])
        assert "<tool_call>" not in texts(events) and (calls or texts(events).strip())


HTML = [{"role": "user", "content": "Write the HTML tag that makes text bold, like <b>."}]


async def test_an_auto_reply_decoded_free_still_keeps_to_the_text_rule(one_pass_smollm):
    """With tools offered a reply runs without the grammar (text_guard), yet holds no '<'."""
    smollm = one_pass_smollm
    plain = texts(await collect(smollm.chat({"messages": HTML, "max_tokens": 40, "temperature": 0.0})))
    guarded = await collect(smollm.chat({"messages": HTML, "tools": [WEATHER], "max_tokens": 40,
                                         "temperature": 0.0}))
    assert "<" in plain  # what the model writes when nothing holds it ("<b>bold</b>" here)
    assert texts(guarded).strip() and "<" not in texts(guarded)
    assert not [e for e in guarded if isinstance(e, ToolCallEvent)]


async def test_a_reply_that_opens_a_call_is_decoded_again_under_the_grammar(one_pass_smollm):
    """Four weather lookups before it: the model opens '<' and gets a well-formed call, not text."""
    smollm = one_pass_smollm
    history = []
    for index, city in enumerate(["Paris", "London", "Rome", "Oslo"]):
        call = ToolCall(id=f"call_{index}", name="get_weather", arguments=json.dumps({"city": city}))
        history += [{"role": "user", "content": f"What is the weather in {city} right now?"},
                    ChatMessage(role="assistant", tool_calls=[call]).model_dump(),
                    {"role": "tool", "tool_call_id": call.id, "content": '{"sky": "sunny"}'},
                    {"role": "assistant", "content": "It is sunny."}]
    history.append({"role": "user", "content": "What is the weather in Berlin right now?"})
    events = await collect(smollm.chat({"messages": history, "tools": [WEATHER], "max_tokens": 60,
                                        "temperature": 0.0}))
    calls = [e.call for e in events if isinstance(e, ToolCallEvent)]
    assert assert_one_done_last(events).finish_reason == "tool_calls" and not texts(events)
    assert [c.name for c in calls] == ["get_weather"]
    assert json.loads(calls[0].arguments) == {"city": "Berlin"}


def test_token_classes_find_the_call_opening_and_leave_the_end_of_turn_alone(smollm):
    llm = smollm.backend.llm
    classes = TokenClasses(llm)
    opening = llm.tokenize(b"<tool_call>", add_bos=False, special=True)[0]
    end = llm.token_eos()
    assert classes.opens_call(opening) and opening in classes.holds_angle
    assert end not in classes.holds_angle and end in classes.not_first  # a reply is never empty
    space = llm.tokenize(b" the", add_bos=False, special=True)[0]
    assert space in classes.not_first and not classes.opens_call(space)


async def test_a_prefilled_prompt_is_not_read_again_by_the_turn_that_sends_it(smollm):
    history = [{"role": "system", "content": "You are a helpful voice assistant. Answer briefly."}]
    for index in range(4):
        history += [{"role": "user", "content": f"Tell me fact number {index} about the sea."},
                    {"role": "assistant", "content": f"Fact {index}: the sea covers most of the planet."}]
    read = await smollm.prefill({"messages": history, "tools": [WEATHER]})
    assert read > 100  # nothing was cached: the whole prompt was read
    turn = history + [{"role": "user", "content": "And one more?"}]
    done = assert_one_done_last(await collect(smollm.chat({"messages": turn, "tools": [WEATHER],
                                                           "max_tokens": 8})))
    assert done.cached_tokens >= read - 3  # all but the generation prompt's role was already read
    assert done.prompt_tokens - done.cached_tokens < 20


async def test_tool_result_fed_back_gets_a_text_answer_not_the_same_call_again(smollm):
    call = ToolCall(id="call_1", name="get_weather", arguments='{"city": "Paris"}')
    messages = [*PARIS, ChatMessage(role="assistant", tool_calls=[call]).model_dump(),
                {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature_c": 18, "sky": "sunny"}'}]
    events = await collect(smollm.chat({"messages": messages, "tools": [WEATHER], "temperature": 0.0,
                                        "max_tokens": 40}))
    done = assert_one_done_last(events)
    assert not [e for e in events if isinstance(e, ToolCallEvent)]
    assert len(texts(events).split()) >= 3 and done.finish_reason in ("stop", "length")


async def test_closing_the_stream_mid_reply_stops_decoding_and_the_next_request_works(smollm):
    stream = smollm.chat({"messages": STORY, "max_tokens": 400})
    deltas = 0
    async for event in stream:
        deltas += isinstance(event, TextDelta)
        if deltas == 3:
            break
    started = time.perf_counter()
    await stream.aclose()
    assert time.perf_counter() - started < 1.0
    assert not smollm.backend.generating
    events = await collect(smollm.chat({"messages": PARIS, "max_tokens": 8}))
    assert assert_one_done_last(events).completion_tokens <= 8 and texts(events)


async def test_cancelling_the_consumer_task_stops_decoding(smollm):
    three_deltas = asyncio.Event()

    async def consume():
        seen = 0
        async for event in smollm.chat({"messages": STORY, "max_tokens": 400}):
            seen += isinstance(event, TextDelta)
            if seen == 3:
                three_deltas.set()

    task = asyncio.create_task(consume())
    await three_deltas.wait()
    started = time.perf_counter()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.perf_counter() - started < 1.0
    assert not smollm.backend.generating
    assert assert_one_done_last(await collect(smollm.chat({"messages": PARIS, "max_tokens": 4})))


async def test_concurrent_requests_take_turns_on_one_model(smollm):
    first, second = await asyncio.gather(
        collect(smollm.chat({"messages": PARIS, "max_tokens": 12})),
        collect(smollm.chat({"messages": STORY, "max_tokens": 12})))
    assert assert_one_done_last(first) and assert_one_done_last(second)
    assert texts(first) and texts(second)


BAD_REQUESTS = [
    ({"messages": []}, "empty_messages"),
    ({"messages": [{"role": "robot", "content": "hi"}]}, "invalid_request"),
    ({"messages": PARIS, "tools": [{"type": "function", "function": {"description": "no name"}}]},
     "invalid_tool_schema"),
    ({"messages": PARIS, "tools": [{"type": "function", "function": {
        "name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "strng"}}}}}]},
     "invalid_tool_schema"),
    ({"messages": [*PARIS, {"role": "tool", "content": "18 C"}]}, "missing_tool_call_id"),
    ({"messages": PARIS, "max_tokens": 0}, "invalid_max_tokens"),
    ({"messages": PARIS, "max_tokens": 100_000}, "invalid_max_tokens"),
    ({"messages": PARIS, "model": "gpt-9"}, "unknown_model"),
    ({"messages": PARIS, "tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "fly"}}},
     "unknown_tool"),
    ({"messages": [{"role": "user", "content": "word " * 6000}]}, "context_length_exceeded"),
]


@pytest.mark.parametrize(("request_body", "code"), BAD_REQUESTS, ids=[code for _, code in BAD_REQUESTS])
async def test_bad_input_is_refused_with_a_code(shared_smollm, request_body, code):
    with pytest.raises(ModelInputError) as refused:
        await collect(shared_smollm.chat(request_body))
    assert refused.value.code == code and refused.value.message


async def test_model_keeps_answering_after_bad_input(shared_smollm):
    for request_body, _ in BAD_REQUESTS:
        with pytest.raises(ModelInputError):
            await collect(shared_smollm.chat(request_body))
    events = await collect(shared_smollm.chat({"messages": PARIS, "max_tokens": 6}))
    assert assert_one_done_last(events) and texts(events)
    assert (await shared_smollm.info())["model"] == "SmolLM2-135M-Instruct.Q4_1"


@pytest.mark.parametrize("decision", ["embedding", "two_step"])
async def test_a_decision_first_chooses_the_tool_a_request_needs_and_fills_its_arguments(decision):
    smollm = LanguageModel.func_or_class(LlmOptions(tool_decision=decision))
    for messages, tool, key, value in [(PARIS, "get_weather", "city", "paris"),
                                       ([{"role": "user", "content": "start a timer for 5 minutes"}],
                                        "set_timer", "minutes", 5)]:
        events = await collect(smollm.chat({"messages": messages, "tools": [WEATHER, TIMER], "max_tokens": 64}))
        calls = [e.call for e in events if isinstance(e, ToolCallEvent)]
        assert [c.name for c in calls] == [tool] and not texts(events)
        assert assert_one_done_last(events).finish_reason == "tool_calls"
        arguments = json.loads(calls[0].arguments)
        jsonschema.validate(arguments, next(t for t in (WEATHER, TIMER) if t["function"]["name"] == tool)
                            ["function"]["parameters"])
        assert (arguments[key].lower() if isinstance(value, str) else arguments[key]) == value


@pytest.mark.parametrize("decision", ["embedding", "two_step", "one_pass"])
async def test_chit_chat_with_tools_offered_is_answered_in_words(decision):
    smollm = LanguageModel.func_or_class(LlmOptions(tool_decision=decision))
    for text in ("Hi there, how are you today?", "Who wrote Romeo and Juliet?"):
        events = await collect(smollm.chat({"messages": [{"role": "user", "content": text}],
                                            "tools": [WEATHER, TIMER], "max_tokens": 24}))
        assert not [e for e in events if isinstance(e, ToolCallEvent)] and texts(events).strip()


def test_each_choice_is_described_by_the_declared_tool_alone():
    assert choice_context(WEATHER) == "The user needs the tool get_weather: Get the current weather for a city"
    undescribed = {"type": "function", "function": {"name": "ping", "parameters": {"type": "object"}}}
    assert choice_context(undescribed) == "The user needs the tool ping: ping"
    assert choice_context(None) == ANSWER_CONTEXT


# --- Hermes rendering and reply reading (no model) ------------------------------------------------

def test_tool_calls_and_results_render_as_hermes_markup():
    call = ToolCall(id="call_1", name="get_weather", arguments='{"city": "Paris"}')
    messages = [ChatMessage(role="system", content="Be brief."), ChatMessage(role="user", content="Weather?"),
                ChatMessage(role="assistant", tool_calls=[call]),
                ChatMessage(role="tool", tool_call_id="call_1", content="18 C"),
                ChatMessage(role="tool", tool_call_id="call_2", content="sunny")]
    rendered = plain_messages(messages, "TOOLS PROMPT")
    assert [m["role"] for m in rendered] == ["system", "user", "assistant", "user"]
    assert rendered[0]["content"] == "TOOLS PROMPT"
    assert rendered[2]["content"] == '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    assert rendered[3]["content"] == "<tool_response>\n18 C\n</tool_response>\n<tool_response>\nsunny\n</tool_response>"


def test_reply_reader_passes_text_through_and_holds_calls_back():
    reader = ReplyReader([WEATHER], "auto")
    assert [reader.feed(p) for p in ["\n", " It", " is", " sunny."]] == ["", "It", " is", " sunny."]
    assert reader.calls() == []
    reader = ReplyReader([WEATHER], "auto")
    pieces = ["<tool", "_call>\n", '{"name": "get_weather", ', '"arguments": {"city": "Rome"}}', "\n</tool_call>"]
    assert [reader.feed(p) for p in pieces] == [""] * 5
    assert [(c.name, json.loads(c.arguments)) for c in reader.calls()] == [("get_weather", {"city": "Rome"})]
    twice = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Rome"}}\n</tool_call>\n' * 2
    assert len(parse_tool_calls(twice, [WEATHER])) == 1
    cut_short = ReplyReader([WEATHER], "required")
    cut_short.feed('<tool_call>\n{"name": "get_weather", "arguments": {"ci')
    assert cut_short.calls() == []


# --- Ollama against the fake server ---------------------------------------------------------------

def ollama_model(fake, **options) -> LanguageModel:
    return LanguageModel.func_or_class({"backend": "ollama", "ollama_host": fake.url, "ollama_model": "llama3.2",
                                        **options})


async def test_ollama_streams_text_chunks_and_reports_token_counts(fake_ollama):
    fake_ollama.script(FakeReply(content="It is sunny in Paris today.", chunks=3))
    events = await collect(ollama_model(fake_ollama).chat({"messages": PARIS}))
    assert len([e for e in events if isinstance(e, TextDelta)]) == 3
    assert texts(events) == "It is sunny in Paris today."
    done = assert_one_done_last(events)
    assert (done.finish_reason, done.prompt_tokens, done.completion_tokens) == ("stop", 12, 6)


async def test_ollama_tool_calls_become_calls_with_json_text_arguments(fake_ollama):
    fake_ollama.script(FakeReply(tool_calls=[{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]))
    events = await collect(ollama_model(fake_ollama).chat({"messages": PARIS, "tools": [WEATHER]}))
    calls = [e.call for e in events if isinstance(e, ToolCallEvent)]
    assert len(calls) == 1 and calls[0].name == "get_weather" and calls[0].id.startswith("call_")
    assert json.loads(calls[0].arguments) == {"city": "Paris"}
    assert assert_one_done_last(events).finish_reason == "tool_calls"


async def test_ollama_request_carries_messages_tools_and_options(fake_ollama):
    call = ToolCall(id="call_1", name="get_weather", arguments='{"city": "Paris"}')
    messages = [{"role": "system", "content": "Be brief."}, *PARIS,
                ChatMessage(role="assistant", tool_calls=[call]).model_dump(),
                {"role": "tool", "tool_call_id": "call_1", "content": "18 C"}]
    model = ollama_model(fake_ollama, ollama_options={"num_ctx": 4096}, ollama_keep_alive="10m")
    await collect(model.chat({"messages": messages, "tools": [WEATHER], "max_tokens": 50, "temperature": 0.2}))
    body = fake_ollama.requests[-1]
    assert body["model"] == "llama3.2" and body["stream"] is True and body["keep_alive"] == "10m"
    assert [m["role"] for m in body["messages"]] == ["system", "user", "assistant", "tool"]
    assert body["messages"][2]["tool_calls"] == [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]
    assert body["messages"][3]["tool_name"] == "get_weather" and body["messages"][3]["content"] == "18 C"
    assert [t["function"]["name"] for t in body["tools"]] == ["get_weather"]
    assert body["options"] == {"num_ctx": 4096, "num_predict": 50, "temperature": 0.2}


async def test_ollama_tool_choice_none_offers_no_tools(fake_ollama):
    await collect(ollama_model(fake_ollama).chat({"messages": PARIS, "tools": [WEATHER], "tool_choice": "none"}))
    assert not fake_ollama.requests[-1].get("tools")


async def test_ollama_unknown_model_is_refused_and_the_backend_keeps_working(fake_ollama):
    model = ollama_model(fake_ollama)
    with pytest.raises(ModelInputError) as refused:
        await collect(model.chat({"messages": PARIS, "model": "nope"}))
    assert refused.value.code == "unknown_model" and "nope" in refused.value.message
    assert texts(await collect(model.chat({"messages": PARIS}))) == "Hello from the fake Ollama."


async def test_ollama_stream_closed_early_leaves_the_backend_usable(fake_ollama):
    fake_ollama.script(FakeReply(content="one two three four five six seven eight", chunks=8),
                       FakeReply(content="Again.", chunks=1))
    model = ollama_model(fake_ollama)
    stream = model.chat({"messages": PARIS})
    assert isinstance(await anext(stream), TextDelta)
    await stream.aclose()
    assert texts(await collect(model.chat({"messages": PARIS}))) == "Again."


async def test_ollama_unreachable_host_is_a_connection_error_naming_it():
    model = LanguageModel.func_or_class({"backend": "ollama", "ollama_host": "http://127.0.0.1:9"})
    with pytest.raises(ConnectionError, match="127.0.0.1:9") as failure:
        await collect(model.chat({"messages": PARIS}))
    assert not isinstance(failure.value, ModelInputError)


# --- OpenAI-compatible servers --------------------------------------------------------------------

def chunk(delta: dict, finish_reason: str | None = None, usage: dict | None = None) -> ChatCompletionChunk:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish_reason}]
    return ChatCompletionChunk.model_validate({"id": "c1", "object": "chat.completion.chunk", "created": 0,
                                               "model": "m", "choices": choices, "usage": usage})


def test_openai_chunks_assemble_interleaved_tool_call_fragments():
    assembler = ChunkAssembler()
    stream = [
        chunk({"role": "assistant", "content": "Checking"}),
        chunk({"content": " now."}),
        chunk({"tool_calls": [{"index": 0, "id": "call_a", "type": "function",
                               "function": {"name": "get_weather", "arguments": ""}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"ci'}}]}),
        chunk({"tool_calls": [{"index": 1, "id": "call_b", "type": "function",
                               "function": {"name": "set_timer", "arguments": '{"minutes"'}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'ty": "Paris"}'}}]}),
        chunk({"tool_calls": [{"index": 1, "function": {"arguments": ": 5}"}}]}),
        chunk({}, finish_reason="tool_calls"),
        chunk(None, usage={"prompt_tokens": 30, "completion_tokens": 17, "total_tokens": 47}),
    ]
    events = [event for c in stream for event in assembler.feed(c)] + assembler.finish()
    assert texts(events) == "Checking now."
    calls = [e.call for e in events if isinstance(e, ToolCallEvent)]
    assert [(c.id, c.name, json.loads(c.arguments)) for c in calls] == [
        ("call_a", "get_weather", {"city": "Paris"}), ("call_b", "set_timer", {"minutes": 5})]
    assert events[-1] == ChatDone(finish_reason="tool_calls", prompt_tokens=30, completion_tokens=17)


def test_openai_text_stream_cut_by_the_limit_ends_with_length():
    assembler = ChunkAssembler()
    events = [e for c in [chunk({"content": "Once upon"}), chunk({"content": " a time"}, finish_reason="length")]
              for e in assembler.feed(c)] + assembler.finish()
    assert [type(e) for e in events] == [TextDelta, TextDelta, ChatDone]
    assert events[-1].finish_reason == "length"


async def test_openai_unreachable_server_is_a_connection_error_naming_it():
    model = LanguageModel.func_or_class(LlmOptions(backend="openai", openai_base_url="http://127.0.0.1:9/v1",
                                                   openai_model="tiny"))
    with pytest.raises(ConnectionError, match="127.0.0.1:9"):
        await collect(model.chat({"messages": PARIS}))
