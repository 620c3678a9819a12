"""The fixed request set of `bench/tool_choice.py`: turns that need a tool, and turns that must not call one.

Written by hand, never tuned against: typed and spoken-style phrasings (lower case, fillers, no
punctuation, as a transcript reads), the server's three built-in tools and client-declared tools
of several schemas. ``expect`` holds the argument values a person asked for (a string is matched
case-insensitively as a substring, anything else by equality); it feeds the stricter "arguments as
asked" column, while "valid arguments" only checks the JSON schema.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from serve_app.session.tools import CALCULATOR_SPEC, TIME_SPEC, WEATHER_SPEC


def function(name: str, description: str, properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "description": description, "parameters": {
        "type": "object", "properties": properties, "required": required}}}


BUILTIN = [spec.schema() for spec in (TIME_SPEC, CALCULATOR_SPEC, WEATHER_SPEC)]

SHOP = [
    function("lookup_order", "Look up a customer's order by its order number: status, items and delivery date.",
             {"order_id": {"type": "string", "description": "the order number, e.g. 1001 or B-20"}}, ["order_id"]),
    function("cancel_order", "Cancel a customer's order that has not shipped yet.",
             {"order_id": {"type": "string"}, "reason": {"type": "string"}}, ["order_id"]),
]
HOME = [
    function("set_lamp", "Turn a lamp or the lights in a room on or off.",
             {"room": {"type": "string", "description": "e.g. living room, kitchen"},
              "on": {"type": "boolean", "description": "true to switch on, false to switch off"}}, ["room", "on"]),
    function("set_timer", "Start a countdown timer.",
             {"minutes": {"type": "integer", "minimum": 1, "description": "length of the timer in minutes"},
              "label": {"type": "string"}}, ["minutes"]),
]
MEDIA = [
    function("play_music", "Play a song, an artist, an album or a genre on the speaker.",
             {"query": {"type": "string", "description": "what to play"}}, ["query"]),
    function("set_volume", "Set the speaker volume.",
             {"level": {"type": "integer", "minimum": 0, "maximum": 100}}, ["level"]),
]
TRAVEL = [
    function("convert_currency", "Convert an amount of money from one currency to another at today's rate.",
             {"amount": {"type": "number"},
              "from_currency": {"type": "string", "description": "ISO code, e.g. USD"},
              "to_currency": {"type": "string", "description": "ISO code, e.g. EUR"}},
             ["amount", "from_currency", "to_currency"]),
    function("translate_text", "Translate a phrase into another language.",
             {"text": {"type": "string"}, "target_language": {"type": "string"}}, ["text", "target_language"]),
]
SCENARIOS: dict[str, list[dict[str, Any]]] = {
    "builtin": BUILTIN, "shop": BUILTIN + SHOP, "home": BUILTIN + HOME, "media": BUILTIN + MEDIA,
    "travel": BUILTIN + TRAVEL,
    "shop_client_only": SHOP,  # the OpenAI route offers only the client's tools
}


@dataclass(frozen=True)
class Case:
    text: str
    scenario: str
    tool: str | None  # the tool the request needs; None: it must be answered in words
    expect: dict[str, Any] = field(default_factory=dict)

    @property
    def tools(self) -> list[dict[str, Any]]:
        return SCENARIOS[self.scenario]


def _needs(tool: str, scenario: str, rows: list[tuple[str, dict[str, Any]]]) -> list[Case]:
    return [Case(text, scenario, tool, expect) for text, expect in rows]


NEEDS_A_TOOL: list[Case] = [
    *_needs("get_current_time", "builtin", [
        ("What time is it?", {}),
        ("uh what's the time right now", {}),
        ("What time is it in Tokyo?", {"timezone": "tokyo"}),
        ("can you tell me the current time in new york", {"timezone": "new_york"}),
        ("What's today's date?", {}),
        ("what day of the week is it today", {}),
    ]),
    *_needs("get_current_time", "home", [
        ("Do you know what time it is in London right now?", {"timezone": "london"}),
        ("hey um what time is it", {}),
    ]),
    *_needs("calculator", "builtin", [
        ("What is 12 times 7?", {"expression": "12"}),
        ("calculate 15 percent of 80", {"expression": "80"}),
        ("what's the square root of 144", {"expression": "144"}),
        ("How much is 2300 divided by 46?", {"expression": "2300"}),
        ("um what's three hundred and twelve plus eighty nine", {}),
        ("Compute (17 + 5) * 3.", {"expression": "17"}),
    ]),
    *_needs("calculator", "travel", [
        ("what is 2 to the power of 10", {"expression": "10"}),
        ("can you work out 7.5 times 4 for me", {"expression": "7.5"}),
    ]),
    *_needs("get_weather", "builtin", [
        ("What's the weather in Paris?", {"city": "paris"}),
        ("is it raining in london right now", {"city": "london"}),
        ("how hot is it in Cairo today", {"city": "cairo"}),
        ("Tell me the weather forecast for Berlin.", {"city": "berlin"}),
        ("uh do i need an umbrella in seattle today", {"city": "seattle"}),
        ("What's the temperature in Madrid?", {"city": "madrid"}),
    ]),
    *_needs("get_weather", "media", [
        ("check the weather in tokyo please", {"city": "tokyo"}),
        ("How windy is it in Chicago right now?", {"city": "chicago"}),
    ]),
    *_needs("lookup_order", "shop", [
        ("Look up order number 4417 for me with the lookup_order tool", {"order_id": "4417"}),
        ("where is my order 5521", {"order_id": "5521"}),
        ("Can you check the status of order A-1093?", {"order_id": "a-1093"}),
        ("I want to know what happened to my order number 88231.", {"order_id": "88231"}),
    ]),
    *_needs("lookup_order", "shop_client_only", [
        ("um my order 3310 hasn't arrived can you look it up", {"order_id": "3310"}),
        ("Find order 7002.", {"order_id": "7002"}),
    ]),
    *_needs("cancel_order", "shop", [
        ("Please cancel my order 6120, I don't need it any more.", {"order_id": "6120"}),
    ]),
    *_needs("set_lamp", "home", [
        ("turn on the living room lamp", {"room": "living room", "on": True}),
        ("Switch off the bedroom light.", {"room": "bedroom", "on": False}),
        ("can you turn the kitchen lights on", {"room": "kitchen", "on": True}),
        ("lights off in the hallway please", {"room": "hallway", "on": False}),
    ]),
    *_needs("set_timer", "home", [
        ("Set a timer for 5 minutes.", {"minutes": 5}),
        ("start a ten minute timer for the pasta", {"minutes": 10}),
        ("timer for 3 minutes please", {"minutes": 3}),
    ]),
    *_needs("play_music", "media", [
        ("Play some jazz.", {"query": "jazz"}),
        ("put on bohemian rhapsody by queen", {"query": "bohemian rhapsody"}),
        ("I want to listen to the Beatles.", {"query": "beatles"}),
    ]),
    *_needs("set_volume", "media", [
        ("turn the volume up to 80", {"level": 80}),
    ]),
    *_needs("convert_currency", "travel", [
        ("convert 50 dollars to euros", {"amount": 50}),
        ("How much is 100 pounds in yen?", {"amount": 100}),
    ]),
    *_needs("translate_text", "travel", [
        ("Translate 'good morning' into Spanish.", {"target_language": "spanish"}),
    ]),
]

_WORDS_ONLY = {
    "builtin": [
        "Hi there!", "hello how are you doing today", "Thanks, that's all.", "what's your name",
        "Tell me a joke.", "good morning", "I'm feeling a bit tired today.", "um can you hear me",
        "What is the capital of France?", "Why is the sky blue?", "Who wrote Romeo and Juliet?",
        "how many legs does a spider have", "What is photosynthesis?", "I love rainy weather.",
        "Time flies when you're having fun, doesn't it?", "What is a calculator?",
    ],
    "home": [
        "That's great, thank you!", "bye for now", "explain what a black hole is",
        "What's the biggest planet in the solar system?", "how do i boil an egg", "What does a timer do?",
        "Give me a tip for sleeping better.",
    ],
    "shop": [
        "Who made you?", "nice to meet you", "What language do they speak in Brazil?",
        "I ordered pizza last night and it was great.", "Can you recommend a good book?",
        "what's the opposite of hot",
    ],
    "media": [
        "Music makes me happy.", "Tell me a fun fact about octopuses.", "Write a short poem about the sea.",
        "do you like cats", "What is a noun?", "Describe a rainbow.",
    ],
    "travel": [
        "What is the difference between weather and climate?", "How do I say thank you politely?",
        "What's a healthy breakfast?", "can you help me with something", "My favourite subject at school was maths.",
    ],
    "shop_client_only": ["what's up", "Spell the word cat.", "ok", "What does a dog eat?"],
}
WORDS_ONLY: list[Case] = [Case(text, scenario, None) for scenario, texts in _WORDS_ONLY.items() for text in texts]

ALL_CASES = NEEDS_A_TOOL + WORDS_ONLY
