"""How a session takes turns and answers, beyond the defaults a native client gets.

A client that manages the conversation itself (commits its own turns, asks for each response,
runs its own tools) changes these with a ``Configure`` command; per-response changes come with
``CreateResponse``. The defaults are exactly the native protocol's behaviour.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from serve_app.session.options import TurnDetectionOptions


@dataclass
class TurnPolicy:
    manual: bool = False  # True: a turn ends only on CommitAudio; no VAD turns, no barge-in by voice
    detection: TurnDetectionOptions | None = None  # None: the server's turn-detection options
    auto_respond: bool = True  # answer as soon as a turn ends
    interrupt: bool = True  # the user's speech cancels a response in progress
    partial_transcripts: bool = True  # transcript_partial while the user speaks (if the server allows it)


@dataclass
class ReplyPolicy:
    speak: bool = True  # False: text only, no TTS
    builtin_tools: bool = True  # offer the server's own tools (time, calculator, weather)
    end_on_client_tool: bool = False  # a client tool call ends the response; its result comes back as a message
    max_tokens: int | None = None  # None: the server's max_response_tokens
    tool_choice: str | dict = "auto"  # auto | none | required | {"type": "function", "function": {"name": ...}}


@dataclass
class ResponseOverrides:
    """One response's settings that differ from the session's; None keeps the session's."""

    instructions: str | None = None
    speak: bool | None = None
    voice: str | None = None
    tools: list[dict] | None = field(default=None)
    tool_choice: str | dict | None = None
    max_tokens: int | None = None
