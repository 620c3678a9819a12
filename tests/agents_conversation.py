"""The scripted conversation both Agents SDK tests (Python and JS) hold: the LLM's replies in the
order the steps ask for them, so the two SDKs are checked against the same turns."""

from __future__ import annotations

from tests.fake_ollama import FakeReply

STORY = " ".join(f"Sentence number {n} of a long story about the sea and a ship." for n in range(1, 41))
REPLIES = [
    FakeReply(content="I hear you: he could wait no longer."),                       # the spoken question
    FakeReply(content="Paris is the capital of France."),                           # the typed question
    FakeReply(content=STORY, chunks=40),                                            # stopped by interrupt()
    FakeReply(content=STORY, chunks=40),                                            # stopped by speech
    FakeReply(content="All right, I will stop there."),                             # the barge-in's answer
    FakeReply(tool_calls=[{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]),
    FakeReply(content="It is sunny and 21 degrees in Paris."),                      # after the tool result
]
