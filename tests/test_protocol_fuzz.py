"""Property tests of both wire protocols over real sockets (uvicorn, the in-process app, real models).

Each example opens a socket, sends a random mix of frames that must each be refused (malformed JSON,
the wrong shapes, wrong types, unknown types, sizes, binary junk) interleaved with harmless good
ones, then checks that: every bad frame got exactly one ``error`` with a code and a message, the
server did not drop the socket, and a good text turn still works on it afterwards. Derandomized
with a fixed number of examples, so CI runs the same frames every time.
"""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.sync.client import connect

from serve_app.host import SessionHost
from serve_app.protocols import native_wire
from serve_app.protocols.native_config import NativeConfig
from serve_app.protocols.openai_realtime.client_events import CLIENT_EVENT_TYPES
from tests.live_server import LiveServer
from tests.session_harness import build_app, server_options

FUZZ = settings(max_examples=30, derandomize=True, deadline=None, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large, HealthCheck.large_base_example])
BAD, GOOD = "bad", "good"

# ---- JSON pieces --------------------------------------------------------------------------------

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(
    max_size=40)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=12), inner, max_size=4), max_leaves=10)
not_strings = json_values.filter(lambda v: not isinstance(v, str))
not_objects = json_values.filter(lambda v: not isinstance(v, dict))
not_base64 = st.text(max_size=60).map(lambda t: t + "!")  # '!' is outside the alphabet, whatever precedes it
junk_fields = st.dictionaries(st.text(max_size=12).filter(lambda k: k != "type"), json_values, max_size=3)


def _not_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return True
    return False


not_json = st.one_of(st.text(max_size=300).filter(_not_json),
                     st.integers(1_000, 200_000).map(lambda n: "{" * n),  # big and unbalanced
                     st.integers(5_000, 100_000).map(lambda n: "[" * n + "]" * n))  # nested past the parser's stack


def with_fields(kind: str, fields: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[str]:
    return st.tuples(junk_fields, fields).map(lambda parts: json.dumps({**parts[0], **parts[1], "type": kind}))


def frames(bad: st.SearchStrategy, good: st.SearchStrategy) -> st.SearchStrategy[list[tuple[str, Any]]]:
    return st.lists(st.one_of(bad.map(lambda f: (BAD, f)), good.map(lambda f: (GOOD, f))), min_size=1, max_size=8)


# ---- the native protocol ------------------------------------------------------------------------

_CONFIG_KEYS = {f.alias or name for name, f in NativeConfig.model_fields.items()} | set(NativeConfig.model_fields)
native_bad = st.one_of(
    not_json,
    not_objects.map(json.dumps),
    junk_fields.map(json.dumps),  # no type
    st.tuples(junk_fields, not_strings | st.text(max_size=30).filter(lambda t: t not in native_wire.CLIENT_TYPES))
    .map(lambda parts: json.dumps({**parts[0], "type": parts[1]})),
    with_fields("audio_chunk", st.fixed_dictionaries({"audio": not_strings | not_base64})),
    with_fields("audio_chunk", st.binary(min_size=1, max_size=999).filter(lambda b: len(b) % 2).map(
        lambda b: {"audio": base64.b64encode(b).decode()})),  # half a sample
    with_fields("upload_image", st.fixed_dictionaries({"image": not_strings | not_base64})),
    with_fields("user_message", st.fixed_dictionaries({"text": not_strings | st.sampled_from(["", "  ", "\n\t"])})),
    with_fields("user_message", st.integers(8001, 40_000).map(lambda n: {"text": "a" * n})),
    with_fields("resume_session", st.fixed_dictionaries({}, optional={"sessionId": not_strings})),
    with_fields("resume_session", st.fixed_dictionaries({"sessionId": st.text(min_size=1, max_size=200)})),
    with_fields("tool_result", st.fixed_dictionaries({}, optional={"callId": not_strings})),
    with_fields("tool_result", st.fixed_dictionaries({"callId": st.text(max_size=40), "result": json_values})),
    with_fields("start_conversation", st.fixed_dictionaries({"config": not_objects.filter(lambda v: v is not None)})),
    with_fields("start_conversation", st.fixed_dictionaries({"config": st.dictionaries(
        st.text(max_size=12).filter(lambda k: k not in _CONFIG_KEYS), json_values, min_size=1, max_size=3)})),
    with_fields("start_conversation", st.fixed_dictionaries({"config": st.fixed_dictionaries({
        "inputSampleRate": st.integers().filter(lambda r: not 8000 <= r <= 48000) | st.text(max_size=8)
        | st.lists(scalars, max_size=2)})})),
    with_fields("start_conversation", st.fixed_dictionaries({"sessionId": not_strings.filter(lambda v: v is not None)})),
    with_fields("retry_turn", st.just({})),
    st.binary(min_size=1, max_size=4001).filter(lambda b: len(b) % 2),  # binary audio of half a sample
)
native_good = st.builds(lambda t: json.dumps({"type": "ping", "t": t}), json_values)


@pytest.fixture(scope="module")
def server(models, tmp_path_factory):
    options = server_options(tmp_path_factory.mktemp("fuzz") / "db.sqlite3", spoken_reply_tokens=8,
                             max_response_tokens=8, playback_lead_ms=60_000)
    with LiveServer(build_app(SessionHost(models, options))) as running:
        yield running


def next_json(ws, timeout: float = 60) -> dict[str, Any]:
    while True:
        frame = ws.recv(timeout=timeout)
        if isinstance(frame, str):
            return json.loads(frame)


@FUZZ
@given(sent=frames(native_bad, native_good))
def test_native_protocol_refuses_each_bad_frame_and_keeps_the_socket(server, sent):
    with connect(f"{server.ws_url}/ws", open_timeout=30, max_size=None) as ws:
        ws.send(json.dumps({"type": "start_conversation"}))
        while next_json(ws)["type"] != "state_change":
            pass
        for _, frame in sent:
            ws.send(frame)
        marker = uuid.uuid4().hex  # pings go through the session in order: errors of the frames come before it
        ws.send(json.dumps({"type": "ping", "t": marker}))
        events = []
        while (event := next_json(ws))["type"] != "pong" or event["t"] != marker:
            events.append(event)
        errors = [e for e in events if e["type"] == "error"]
        assert len(errors) == sum(kind == BAD for kind, _ in sent), (sent, events)
        assert all(e["code"] and e["message"] and e["phase"] for e in errors)
        assert not [e for e in errors if e["code"] == "internal_error"], errors  # each refusal was foreseen
        assert {e["type"] for e in events} <= {"error", "pong"}, events

        ws.send(json.dumps({"type": "user_message", "text": "Say hello."}))
        while (event := next_json(ws))["type"] != "llm_complete":
            assert event["type"] != "error", event
        assert event["fullText"]


# ---- the OpenAI Realtime protocol ---------------------------------------------------------------

openai_bad = st.one_of(
    not_json,
    not_objects.map(json.dumps),
    junk_fields.map(json.dumps),
    st.tuples(junk_fields, not_strings | st.text(max_size=40).filter(lambda t: t not in CLIENT_EVENT_TYPES))
    .map(lambda parts: json.dumps({**parts[0], "type": parts[1]})),
    with_fields("input_audio_buffer.append", st.fixed_dictionaries({"audio": not_strings | not_base64})),
    with_fields("input_audio_buffer.commit", st.just({})),  # nothing appended: too short to commit
    with_fields("session.update", st.fixed_dictionaries({}, optional={"session": not_objects})),
    with_fields("session.update", st.fixed_dictionaries({"session": st.fixed_dictionaries({
        "instructions": not_strings.filter(lambda v: v is not None)})})),
    with_fields("session.update", (st.integers(max_value=0) | st.text(max_size=5).filter(lambda t: t != "inf"))
                .map(lambda bad: {"session": {"max_output_tokens": bad, "max_response_output_tokens": bad}})),
    with_fields("session.update", (not_objects.filter(lambda v: v is not None and not isinstance(v, list))
                                   | st.lists(st.text(max_size=6).filter(lambda t: t not in ("text", "audio")),
                                              min_size=1, max_size=3))
                .map(lambda bad: {"session": {"output_modalities": bad, "modalities": bad}})),  # GA and beta names
    with_fields("conversation.item.create", st.fixed_dictionaries({}, optional={"item": not_objects})),
    with_fields("conversation.item.create", st.fixed_dictionaries({"item": st.fixed_dictionaries({
        "type": st.text(max_size=20).filter(lambda t: t not in ("message", "function_call", "function_call_output"))
        | not_strings})})),
    with_fields("conversation.item.create", st.fixed_dictionaries({"item": st.fixed_dictionaries({
        "type": st.just("message"), "role": st.sampled_from(["user", "assistant", "system"])})})),  # no content
    with_fields("conversation.item.retrieve", st.fixed_dictionaries({"item_id": st.text(max_size=30) | not_strings})),
    with_fields("conversation.item.delete", st.fixed_dictionaries({"item_id": st.text(max_size=30) | not_strings})),
    with_fields("conversation.item.truncate", st.fixed_dictionaries({
        "item_id": st.text(max_size=30), "content_index": st.integers(0, 3), "audio_end_ms": st.integers()})),
    with_fields("response.create", st.fixed_dictionaries({"response": not_objects.filter(lambda v: v is not None)})),
    with_fields("response.cancel", st.just({})),  # nothing to cancel
    st.binary(max_size=3000),  # binary frames are not part of this protocol
)
openai_good = st.just(json.dumps({"type": "input_audio_buffer.clear"}))

GOOD_SESSION = {  # every example ends by setting these, so its random frames cannot decide the last turn
    "ga": {"type": "realtime", "instructions": "Answer in a few words.", "output_modalities": ["text"], "tools": [],
           "tool_choice": "auto", "audio": {"input": {"turn_detection": None}}},
    "beta": {"instructions": "Answer in a few words.", "modalities": ["text"], "tools": [], "tool_choice": "auto",
             "turn_detection": None},
}


@FUZZ
@given(sent=frames(openai_bad, openai_good), shape=st.sampled_from(["ga", "beta"]))
def test_openai_protocol_refuses_each_bad_frame_and_keeps_the_socket(server, sent, shape):
    headers = {"OpenAI-Beta": "realtime=v1"} if shape == "beta" else None
    with connect(f"{server.ws_url}/v1/realtime?model=x", additional_headers=headers, open_timeout=30,
                 max_size=None) as ws:
        assert next_json(ws)["type"] == "session.created"
        for _, frame in sent:
            ws.send(frame)
        # a good turn: the session's commands are handled in order, so every error is in before its end
        modalities = {"output_modalities": ["text"]} if shape == "ga" else {"modalities": ["text"]}
        for event in ({"type": "session.update", "session": GOOD_SESSION[shape]},
                      {"type": "conversation.item.create", "item": {
                          "type": "message", "role": "user", "content": [{"type": "input_text", "text": "Say hi."}]}},
                      {"type": "response.create", "response": modalities}):
            ws.send(json.dumps(event))
        events = []
        while (event := next_json(ws))["type"] != "response.done":
            events.append(event)
        errors = [e for e in events if e["type"] == "error"]
        assert len(errors) == sum(kind == BAD for kind, _ in sent), (sent, errors)
        assert all(e["error"]["code"] and e["error"]["message"] for e in errors)
        assert not [e for e in errors if e["error"]["code"] == "internal_error"], errors  # each refusal was foreseen
        assert event["response"]["status"] in ("completed", "incomplete"), event  # incomplete: the 8-token budget
        assert any(e["type"] in ("response.output_text.delta", "response.text.delta") for e in events)
