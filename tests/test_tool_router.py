"""The embedding tool router (deployments/tool_router.py) on the real all-MiniLM-L6-v2 from its wheel."""

from __future__ import annotations

import numpy as np
import pytest

from deployments.tool_router import ANSWER, SentenceEncoder, ToolRouter, tool_line


def function(name: str, description: str, **properties: dict) -> dict:
    return {"type": "function", "function": {"name": name, "description": description,
                                             "parameters": {"type": "object", "properties": properties}}}


# tools nobody here declared before: not in the server's built-ins nor in the bench's scenarios
BOOK_TABLE = function("book_table", "Reserve a table at a restaurant for a number of people at a time.",
                      people={"type": "integer"}, time={"type": "string"})
WATER_PLANTS = function("water_plants", "Start the garden sprinklers to water the plants.")
FLIGHT_STATUS = function("get_flight_status", "Look up whether a flight is on time, delayed or cancelled.",
                         flight={"type": "string"})
TOOLS = [BOOK_TABLE, WATER_PLANTS, FLIGHT_STATUS]


@pytest.fixture(scope="module")
def router() -> ToolRouter:
    return ToolRouter(margin=0.09)


def test_the_encoder_gives_unit_vectors_closer_for_paraphrases():
    encoder = SentenceEncoder()
    vectors = encoder.encode(["switch on the lights", "turn the lamp on", "the capital of Peru"])
    assert vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.2


def test_a_tool_is_compared_by_its_name_as_words_and_its_description():
    assert tool_line(FLIGHT_STATUS) == ("get flight status: Look up whether a flight is on time, delayed or "
                                        "cancelled.")
    assert tool_line({"type": "function", "function": {"name": "ping"}}) == "ping:"


@pytest.mark.parametrize(("message", "tool"), [
    ("can you book us a table for four at eight tonight", "book_table"),
    ("please water the plants in the garden", "water_plants"),
    ("Is flight BA 117 delayed?", "get_flight_status"),
])
def test_a_clear_request_gets_the_tool_nobody_declared_before(router, message, tool):
    assert router.decide(TOOLS, message).tool == tool


@pytest.mark.parametrize("message", ["hello how are you doing today", "Thanks, that's all.", "Tell me a joke."])
def test_small_talk_is_answered_in_words(router, message):
    decision = router.decide(TOOLS, message)
    assert decision.tool is None and decision.scores[ANSWER] > max(
        score for name, score in decision.scores.items() if name != ANSWER) - router.margin


def test_tool_choice_required_always_gets_the_closest_tool(router):
    decision = router.decide(TOOLS, "hello how are you doing today", allow_answer=False)
    assert decision.tool in {"book_table", "water_plants", "get_flight_status"} and ANSWER not in decision.scores


def test_a_tool_sets_vectors_are_embedded_once(router):
    router.decide(TOOLS, "hello")
    calls = []
    encode = router.encoder.encode
    router.encoder.encode = lambda texts: calls.append(len(texts)) or encode(texts)
    try:
        router.decide(TOOLS, "water the plants")
        router.decide(TOOLS, "book a table")
    finally:
        router.encoder.encode = encode
    assert calls == [1, 1]  # the messages alone: the tools' lines were embedded by the first decision
