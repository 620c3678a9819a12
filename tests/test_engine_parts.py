"""The engine's small parts on their own: the context window, the outbox, the sentence splitter,
the heard-text estimate and the held host of a speculative answer."""

from __future__ import annotations

import asyncio

from deployments.llm import ChatMessage
from serve_app.session.context import ConversationContext
from serve_app.session.events import AudioOut, LlmToken, Outgoing, Pong
from serve_app.session.outbox import Outbox
from serve_app.session.response import Response, ResponseSettings, SpokenSentence
from serve_app.session.sentences import SentenceSplitter, spoken_form
from serve_app.session.speculation import HeldHost


def conversation(turns: int, context: ConversationContext | None = None) -> ConversationContext:
    context = context or ConversationContext(max_turns=8, max_chars=100_000)
    start = len([m for m in context.messages if m.role == "user"])
    for index in range(start, start + turns):
        context.add(ChatMessage(role="user", content=f"question {index}"))
        context.add(ChatMessage(role="assistant", content=f"answer {index}"))
    return context


def prompt_of(context: ConversationContext) -> list[str]:
    return [m.content for m in context.for_llm("be brief")]


# ---- context: the prompt prefix stays byte-identical between trims ------------------------


def test_context_keeps_every_turn_until_the_turn_limit():
    context = conversation(8)
    assert prompt_of(context)[:3] == ["be brief", "question 0", "answer 0"]
    assert context.dropped_turns == 0


def test_context_trims_a_block_at_the_limit_then_extends_the_same_prefix():
    context = conversation(9)
    first = prompt_of(context)
    assert first[1] == "question 5" and context.dropped_turns == 5  # down to half of 8 turns
    for _ in range(4):  # the next turns only append: the old prompt is a prefix of the new one
        conversation(1, context)
        later = prompt_of(context)
        assert later[: len(first)] == first
        first = later
    conversation(1, context)  # the 9th turn of the window: trimmed again, by a block
    assert prompt_of(context)[1] == "question 10"


def test_the_window_moves_on_after_the_answer_that_fills_it_so_the_next_turn_only_appends():
    context = conversation(7)  # max_turns 8: the 8th turn still fits
    assert not context.move_on_ahead("be brief") and prompt_of(context)[1] == "question 0"
    conversation(1, context)  # 8 turns: the 9th would move the window, so it moves now
    assert context.move_on_ahead("be brief")
    ahead = prompt_of(context)  # what a prefill reads while the 8th answer plays
    assert ahead[1] == "question 4" and ahead[-1] == "answer 7"
    conversation(1, context)  # the next turn extends that prompt instead of moving the window again
    assert prompt_of(context)[: len(ahead)] == ahead


def test_the_window_moves_on_ahead_by_characters_too():
    context = ConversationContext(max_turns=100, max_chars=1000)
    conversation(1, context)
    assert not context.move_on_ahead("sys")
    context.add(ChatMessage(role="user", content="x" * 700))
    assert context.move_on_ahead("sys")  # 700 + the next turn's ~300 would cross 1000


def test_context_trims_by_characters_too_and_never_starts_with_an_orphan_tool_result():
    context = ConversationContext(max_turns=100, max_chars=200)
    for index in range(6):
        context.add(ChatMessage(role="user", content=f"{index} " + "x" * 30))
        context.add(ChatMessage(role="tool", tool_call_id="c", content="result"))
        context.add(ChatMessage(role="assistant", content="ok"))
    messages = context.for_llm("sys")
    assert sum(len(m.content) for m in messages[1:]) <= 200 // 2
    assert messages[1].role == "user"


def test_a_pending_user_message_is_in_the_prompt_but_not_in_the_context():
    context = conversation(2)
    messages = context.for_llm("sys", pending=ChatMessage(role="user", content="new words"))
    assert messages[-1].content == "new words"
    assert all(m.content != "new words" for m in context.messages)


# ---- outbox ------------------------------------------------------------------------------


async def test_outbox_drops_events_of_cancelled_generations_but_not_session_events():
    outbox = Outbox()
    outbox.put(Outgoing(AudioOut(b"old", 0), generation=1))
    outbox.put(Outgoing(Pong(1)))
    outbox.put(Outgoing(AudioOut(b"new", 0), generation=2))
    outbox.drop_generations_below(2)
    outbox.close()
    received = []
    while (item := await outbox.get()) is not None:
        received.append(item.event)
    assert received == [Pong(1), AudioOut(b"new", 0)]


# ---- sentences: speech starts on the first clause --------------------------------------------


def split(text: str) -> list[str]:
    splitter = SentenceSplitter()
    pieces = []
    for word in text.split(" "):
        pieces += splitter.push(word + " ")
    return pieces + splitter.flush()


def test_the_first_clause_is_spoken_on_its_own_then_whole_sentences():
    assert split("Well, okay then, the answer is simple. It is Paris, in France.") == [
        "Well, okay then,", "the answer is simple.", "It is Paris, in France."]


def test_a_long_first_sentence_without_a_comma_is_cut_after_six_words():
    pieces = split("I think the weather today will be mostly sunny with light winds. Bye.")
    assert pieces[0] == "I think the weather today will"
    assert pieces[1:] == ["be mostly sunny with light winds.", "Bye."]


def test_a_short_first_sentence_is_not_cut_at_its_comma():
    assert split("Sure, I can help. Ask away.") == ["Sure, I can help.", "Ask away."]


def test_markdown_is_not_read_aloud():
    assert spoken_form("* **Docker** and `AWS Lambda`") == "Docker and AWS Lambda"
    assert spoken_form("## Steps\n- first, see [the docs](http://x.y/z)") == "Steps first, see the docs"
    assert spoken_form("**") == "" and spoken_form("It costs 5-10 dollars.") == "It costs 5-10 dollars."


# ---- heard text: what a barge-in keeps -------------------------------------------------------


class _Host:
    def emit(self, event, generation): ...


def spoken_reply(sentences: list[tuple[str, float, bool]]) -> Response:
    """A response whose audio timing is given: (text, milliseconds sent, synthesis complete)."""
    response = Response.__new__(Response)
    response.settings = ResponseSettings(instructions="", output_rate=16000, voice=None, max_tokens=1,
                                         temperature=0, max_tool_rounds=0, playback_lead_ms=0,
                                         client_tool_timeout_s=1)
    response.sentences, start = [], 0.0
    for text, sent_ms, complete in sentences:
        response.sentences.append(SpokenSentence(text, start_ms=start, sent_ms=sent_ms, complete=complete))
        start += sent_ms
    response.audio_sent_ms = start
    response.full_text = " ".join(text for text, _, _ in sentences)
    return response


def test_heard_text_is_whole_sentences_then_a_share_of_the_one_playing():
    reply = spoken_reply([("One two three four.", 1000, True), ("Five six seven eight.", 1000, True)])
    assert reply.text_at(0) == ""
    assert reply.text_at(1000) == "One two three four."
    assert reply.text_at(1500) == "One two three four. Five six"
    assert reply.text_at(5000) == reply.full_text


def test_heard_text_of_a_sentence_still_synthesising_is_estimated_from_its_words():
    reply = spoken_reply([("One two three four five six seven eight nine ten.", 700, False)])
    # 10 words at ~350 ms each is 3.5 s of speech, of which 700 ms are sent and 350 ms played
    assert reply.text_at(350) == "One"


# ---- the held host of a speculative answer ---------------------------------------------------


class RecordingHost:
    def __init__(self) -> None:
        self.events, self.replies = [], []

    def emit(self, event, generation):
        self.events.append((event, generation))

    async def first_audio(self, generation):
        self.events.append(("first_audio", generation))

    async def store_reply(self, text):
        self.replies.append(text)
        return 7


async def test_a_held_host_passes_nothing_on_before_release_and_everything_in_order_after():
    host = RecordingHost()
    held = HeldHost(host)
    held.emit(LlmToken("Hel"), 3)
    stored = asyncio.ensure_future(held.store_reply("Hello"))
    audio = asyncio.ensure_future(held.first_audio(3))
    await asyncio.sleep(0)
    assert host.events == [] and host.replies == [] and not stored.done()
    held.release()
    assert await stored == 7 and host.replies == ["Hello"]
    await audio
    held.emit(LlmToken("lo"), 3)
    assert host.events == [(LlmToken("Hel"), 3), ("first_audio", 3), (LlmToken("lo"), 3)]
