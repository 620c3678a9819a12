"""The engine's stages on their own, without sockets or models: turn strategies, input audio, the conversation.

VAD frames are synthetic probabilities (a frame is 512 samples, 32 ms). The end-of-turn model is
the one fake here, at its service boundary; the store is a real SQLite file.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from deployments.llm import ChatMessage, ToolCall
from serve_app.clients.vad_ticker import VadFrames
from serve_app.protocols.native import error_text
from serve_app.protocols.native_config import NativeConfig
from serve_app.session.audio_input import SAMPLE_RATE, AudioFormatError, InputAudio
from serve_app.session.channel import SessionChannel
from serve_app.session.config import SessionSettings
from serve_app.session.context import ConversationContext
from serve_app.session.conversation import Conversation
from serve_app.session.events import ErrorEvent, State, StateChanged
from serve_app.session.inbox import Verdict
from serve_app.session.options import BargeInOptions, TurnDetectionOptions
from serve_app.session.policy import TurnPolicy
from serve_app.session.turn_detection import FRAME_SAMPLES, TurnEnded
from serve_app.session.turn_strategy import ManualTurns, SemanticTurns, ServerVadTurns, turn_strategy
from serve_app.store import SessionStore


class EndOfTurnModel:
    """Stands in for the Smart Turn runner: a fixed completion probability, and the audio it was asked about."""

    def __init__(self, probability: float) -> None:
        self.probability = probability
        self.asked: list[np.ndarray] = []

    async def completion_probability(self, audio_16k: np.ndarray) -> float:
        self.asked.append(audio_16k)
        return self.probability


def frames(probabilities: list[float], first_frame: int = 0) -> VadFrames:
    return VadFrames(np.array(probabilities, dtype=np.float32), (first_frame + len(probabilities)) * FRAME_SAMPLES)


def signals_of(strategy, batch: VadFrames) -> list:
    return [signal for per_frame in strategy.on_frames(batch) for signal in per_frame]


def kinds(signals: list) -> list[str]:
    return [type(signal).__name__ for signal in signals]


def audio_stage(channel: SessionChannel) -> InputAudio:
    audio = InputAudio(10, 300, None, channel.submit)
    audio.open(SAMPLE_RATE)
    return audio


SPEECH = [0.9] * 10  # 320 ms: past min_speech_ms (250)


async def test_semantic_turns_ask_the_end_of_turn_model_at_a_pause_and_end_on_its_verdict():
    channel = SessionChannel()
    model = EndOfTurnModel(0.9)
    audio = audio_stage(channel)
    audio.push(np.zeros(30 * FRAME_SAMPLES, dtype="<i2").tobytes(), to_vad=False)
    turns = turn_strategy(TurnPolicy(), TurnDetectionOptions(), BargeInOptions(), channel, model, audio)
    assert isinstance(turns, SemanticTurns)

    signals = signals_of(turns, frames(SPEECH + [0.0] * 7))  # 224 ms of pause: past 96 and 200 ms
    assert kinds(signals) == ["Onset", "SpeechConfirmed", "PossibleTurnEnd"]
    verdict = await asyncio.wait_for(channel.inbox.get(), 1)  # the model was asked, off the actor
    assert isinstance(verdict, Verdict) and verdict.probability == 0.9
    assert len(model.asked) == 1 and model.asked[0].size == 17 * FRAME_SAMPLES  # the speech and its pause so far

    ended = turns.on_verdict(verdict)
    assert kinds(ended) == ["TurnEnded"] and ended[0].reason == "smart_turn"
    assert (ended[0].start_sample, ended[0].end_sample) == (0, 10 * FRAME_SAMPLES)


async def test_a_stale_verdict_after_speech_resumed_ends_nothing():
    channel = SessionChannel()
    turns = turn_strategy(TurnPolicy(), TurnDetectionOptions(), BargeInOptions(), channel, EndOfTurnModel(0.9),
                          audio_stage(channel))
    signals_of(turns, frames(SPEECH + [0.0] * 7))
    verdict = await asyncio.wait_for(channel.inbox.get(), 1)
    assert kinds(signals_of(turns, frames([0.9], first_frame=17))) == ["SpeechResumed"]
    assert turns.on_verdict(verdict) == []


async def test_server_vad_turns_end_after_fixed_silence_without_asking_a_model():
    channel = SessionChannel()
    options = TurnDetectionOptions(smart_turn=False, min_silence_ms=320)
    turns = turn_strategy(TurnPolicy(detection=options), TurnDetectionOptions(), BargeInOptions(), channel,
                          EndOfTurnModel(0.0), audio_stage(channel))
    assert isinstance(turns, ServerVadTurns)
    signals = signals_of(turns, frames(SPEECH + [0.0] * 10))
    assert kinds(signals) == ["Onset", "SpeechConfirmed", "PossibleTurnEnd", "TurnEnded"]
    assert signals[-1].reason == "silence"
    await asyncio.sleep(0)
    assert channel.inbox.empty()  # no end-of-turn question


async def test_without_the_end_of_turn_model_the_default_policy_is_server_vad():
    channel = SessionChannel()
    turns = turn_strategy(TurnPolicy(), TurnDetectionOptions(), BargeInOptions(), channel, None, audio_stage(channel))
    assert isinstance(turns, ServerVadTurns)


async def test_manual_turns_ignore_voice():
    channel = SessionChannel()
    turns = turn_strategy(TurnPolicy(manual=True, auto_respond=False, interrupt=False), TurnDetectionOptions(),
                          BargeInOptions(), channel, EndOfTurnModel(0.9), audio_stage(channel))
    assert isinstance(turns, ManualTurns)
    assert not turns.listens and not turns.responds and not turns.interrupts
    assert signals_of(turns, frames(SPEECH + [0.0] * 80)) == []
    assert not turns.in_speech
    assert turns.on_verdict(Verdict(1, 0.9)) == []


async def test_degraded_vad_is_reported_once_and_semantic_turns_fall_back_to_fixed_silence():
    channel = SessionChannel()
    model = EndOfTurnModel(0.0)
    turns = turn_strategy(TurnPolicy(), TurnDetectionOptions(min_silence_ms=320), BargeInOptions(), channel, model,
                          audio_stage(channel))
    batch = frames(SPEECH + [0.0] * 10)
    batch.degraded, batch.error = True, "vad down"
    signals = signals_of(turns, batch)
    assert isinstance(signals[-1], TurnEnded) and signals[-1].reason == "silence"
    again = frames([0.0], first_frame=20)
    again.degraded = True
    signals_of(turns, again)
    errors = []
    while not channel.outbox._queue.empty():
        errors.append(channel.outbox._queue.get_nowait().event)
    assert [e.code for e in errors if isinstance(e, ErrorEvent)] == ["service_unavailable"]
    assert model.asked == []
    # a strategy made after the degradation (a client reconfigured turns) stays degraded
    after = turn_strategy(TurnPolicy(), TurnDetectionOptions(), BargeInOptions(), channel, model,
                          audio_stage(channel), vad_degraded=turns.vad_degraded)
    assert not after.detector.smart_turn


async def test_speech_over_the_assistant_needs_the_stricter_barge_in_threshold():
    channel = SessionChannel()
    turns = turn_strategy(TurnPolicy(), TurnDetectionOptions(), BargeInOptions(threshold=0.7), channel, None,
                          audio_stage(channel))
    channel.watch_state(turns.on_state)
    await channel.set_state(State.SPEAKING)
    assert signals_of(turns, frames([0.6] * 10)) == []  # speech while listening, echo while speaking
    await channel.set_state(State.LISTENING)
    assert kinds(signals_of(turns, frames([0.6] * 10, first_frame=10)))[:2] == ["Onset", "SpeechConfirmed"]


async def test_state_changes_are_announced_once():
    channel = SessionChannel()
    seen: list[State] = []
    channel.watch_state(seen.append)
    await channel.set_state(State.LISTENING)
    await channel.set_state(State.LISTENING)
    assert seen == [State.LISTENING]
    assert (await channel.outbox.get()).event == StateChanged(State.LISTENING)


async def test_emit_drops_output_of_a_cancelled_generation():
    channel = SessionChannel()
    old = channel.next_generation()
    channel.next_generation()
    channel.emit(StateChanged(State.SPEAKING), old)
    channel.emit(StateChanged(State.THINKING), channel.generation)
    assert (await channel.outbox.get()).event == StateChanged(State.THINKING)


# ---- InputAudio -------------------------------------------------------------------------------


async def test_input_audio_resamples_48k_to_16k_on_one_timeline():
    audio = InputAudio(10, 300, None, lambda frames: None)
    audio.open(48000)
    second = (np.sin(np.arange(48000) / 10) * 10000).astype("<i2").tobytes()
    for start in range(0, len(second), 9600):
        audio.push(second[start:start + 9600], to_vad=True)
    assert abs(audio.end - SAMPLE_RATE) < 400  # soxr keeps some samples in its filter
    with pytest.raises(AudioFormatError):
        audio.push(b"\x00\x01\x02", to_vad=False)


async def test_input_audio_slices_an_utterance_with_padding_but_never_before_the_last_turn():
    audio = InputAudio(10, 300, None, lambda frames: None)
    audio.open(SAMPLE_RATE)
    audio.push((np.arange(3 * SAMPLE_RATE) % 1000).astype("<i2").tobytes(), to_vad=False)
    assert audio.utterance_start(SAMPLE_RATE) == SAMPLE_RATE - 300 * SAMPLE_RATE // 1000
    assert audio.commit_until(2 * SAMPLE_RATE) == 0
    assert audio.utterance_start(2 * SAMPLE_RATE + 100) == 2 * SAMPLE_RATE  # the last turn ended here
    piece = audio.slice(2 * SAMPLE_RATE, 2 * SAMPLE_RATE + 10)
    assert np.allclose(piece * 32768, np.arange(2 * SAMPLE_RATE, 2 * SAMPLE_RATE + 10) % 1000)
    audio.clear()
    assert audio.buffer_start == audio.end == 3 * SAMPLE_RATE


# ---- Conversation -------------------------------------------------------------------------------


@pytest.fixture
async def store(tmp_path):
    opened = await SessionStore.open(tmp_path / "sessions.sqlite3")
    yield opened
    await opened.close()


async def test_conversation_writes_every_turn_through_the_store(store):
    conversation = Conversation(store, ConversationContext(16, 6000))
    await conversation.create("s1", SessionSettings(voice="joe"))
    await conversation.start_turn()
    await conversation.add("user", "what time is it", "msg_user")
    call = ToolCall(id="call_1", name="get_time", arguments="{}")
    await conversation.store_tool_call(call)
    await conversation.finish_tool_call("call_1", {"time": "noon"}, "ok")
    reply = await conversation.store_reply("It is noon and")
    await conversation.update_reply(reply, content="It is noon", status="interrupted", full_content="It is noon and")
    await conversation.record_state(State.SPEAKING)
    await conversation.record_turn(True, prompt_tokens=40, cached_tokens=30, times={"speech_end_at": 1.0})

    stored = [(m.role, m.content, m.status) for m in await store.messages("s1")]
    assert stored == [("user", "what time is it", "complete"), ("assistant", "It is noon", "interrupted")]
    assert (await store.get_session("s1")).state == "speaking"
    assert [c.status for c in await store.tool_calls("s1")] == ["ok"]
    turn = (await store.turns("s1"))[0]
    assert turn.interrupted and turn.prompt_tokens == 40 and turn.cached_tokens == 30
    assert [m.content for m in conversation.context.messages] == ["what time is it"]
    assert conversation.context.find("msg_user") is conversation.context.messages[0]


async def test_a_resumed_conversation_has_its_history_and_the_adapters_settings(store):
    first = Conversation(store, ConversationContext(16, 6000))
    native = NativeConfig.model_validate({"binaryAudio": True, "audioFormat": "mulaw", "inputSampleRate": 8000})
    await first.create("s1", native.settings())
    await first.add("user", "hello", None)
    await first.store_reply("hi there")

    resumed = Conversation(store, ConversationContext(16, 6000))
    stored = await resumed.resume("s1")
    assert stored.id == "s1"
    assert resumed.config.input_sample_rate == 8000
    assert NativeConfig.of(resumed.config) == native  # a resumed native socket knows binaryAudio and audioFormat
    assert [(m.role, m.content) for m in resumed.context.messages] == [("user", "hello"), ("assistant", "hi there")]
    assert not await resumed.exists("s2")


async def test_a_client_tool_result_message_finishes_its_stored_call(store):
    conversation = Conversation(store, ConversationContext(16, 6000))
    await conversation.create("s1", SessionSettings())
    await conversation.store_tool_call(ToolCall(id="call_9", name="lookup", arguments="{}"))
    await conversation.add_client_message(ChatMessage(role="tool", tool_call_id="call_9", content="42"), "item_1",
                                          None)
    await conversation.add_client_message(ChatMessage(role="tool", tool_call_id="call_unknown", content="1"),
                                          "item_2", "")  # a replayed result for a call never made: kept, no error
    assert [c.status for c in await store.tool_calls("s1")] == ["ok"]
    assert [m.tool_call_id for m in conversation.context.messages] == ["call_unknown", "call_9"]


async def test_a_session_stored_in_the_native_camelcase_form_still_resumes(store):
    await store.create_session("old", {"inputSampleRate": 8000, "outputSampleRate": 16000, "audioFormat": "mulaw",
                                       "binaryAudio": True, "voice": "joe", "instructions": None, "tools": []})
    conversation = Conversation(store, ConversationContext(16, 6000))
    await conversation.resume("old")
    assert (conversation.config.input_sample_rate, conversation.config.output_sample_rate) == (8000, 16000)
    assert conversation.config.voice == "joe"
    assert NativeConfig.of(conversation.config).wire()["audioFormat"] == "mulaw"
    assert NativeConfig.of(conversation.config).binary_audio


def test_native_config_keeps_its_audio_settings_out_of_the_engines_fields():
    settings = NativeConfig.model_validate({"audioFormat": "mulaw", "voice": "joe"}).settings()
    assert settings.transport == {"audioFormat": "mulaw", "binaryAudio": False}
    assert "audioFormat" not in settings.model_dump()
    assert NativeConfig.of(SessionSettings()).wire() == NativeConfig().wire()  # an OpenAI session, seen natively


def test_native_command_hints_are_added_by_the_native_adapter_not_the_engine():
    retryable = ErrorEvent("speech-to-text timed out", "stt", "timeout", retryable=True)
    assert error_text(retryable) == "speech-to-text timed out; send retry_turn to try this turn again"
    assert error_text(ErrorEvent("speech-to-text timed out", "stt", "timeout")) == "speech-to-text timed out"
    assert error_text(ErrorEvent("the conversation has not started", "session", "not_started")) == (
        "send start_conversation or resume_session first")
