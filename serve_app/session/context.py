"""What the LLM sees: recent turns within a turn and character budget, trimmed in blocks.

The prompt must start with the same bytes turn after turn, or llama.cpp (and any server with a
prefix cache) re-reads the whole conversation every turn: dropping the oldest turn each time
shifts the prefix and cost about 5 s a turn on 2 cores from turn 8 on. So the window's first
turn stays put until a limit is crossed, and then moves forward by a block (down to half the
limits), which keeps the prefix stable for the next several turns.

The messages themselves are bounded too (``max_messages``): what lies before the window is never
sent again, so it is forgotten here (it stays in the store); only a window of more than
``max_messages`` (one huge turn a client built from items) is cut from its oldest end.
"""

from __future__ import annotations

import logging

from deployments.llm import ChatMessage

logger = logging.getLogger(__name__)

NEXT_TURN_CHARS = 300  # a spoken request and its answer, for deciding to move the window early


class ConversationContext:
    def __init__(self, max_turns: int, max_chars: int, max_messages: int = 400) -> None:
        self.max_turns = max_turns
        self.max_chars = max_chars
        self.max_messages = max_messages
        self.messages: list[ChatMessage] = []
        self.dropped_turns = 0  # turns left out of the last request, for logs and tests
        self._window_start: ChatMessage | None = None  # first message of the oldest turn still sent
        self.ids: dict[str, list[ChatMessage]] = {}  # a client's message ids -> the messages they name

    def add(self, message: ChatMessage, message_id: str | None = None) -> None:
        self.messages.append(message)
        self.name(message, message_id)
        self.bound()

    def bound(self) -> None:
        """Over ``max_messages``: drop what lies before the window; then, if still too many, the oldest."""
        if len(self.messages) <= self.max_messages:
            return
        start = next((i for i, m in enumerate(self.messages) if m is self._window_start), 0)
        keep_from = max(start, len(self.messages) - self.max_messages)
        if keep_from == 0:
            return
        gone = {id(m) for m in self.messages[:keep_from]}
        self.messages = self.messages[keep_from:]
        if self._window_start is not None and id(self._window_start) in gone:
            self._window_start = None
        for name, named in list(self.ids.items()):
            kept = [m for m in named if id(m) not in gone]
            if kept:
                self.ids[name] = kept
            else:
                del self.ids[name]

    def name(self, message: ChatMessage, message_id: str | None) -> None:
        if message_id:
            self.ids.setdefault(message_id, []).append(message)

    def insert(self, message: ChatMessage, message_id: str, after: str | None) -> None:
        """After the message named ``after`` ("" = first, None or unknown = last)."""
        if after is None or (after and after not in self.ids):
            self.add(message, message_id)
            return
        index = 0
        if after:
            anchors = self.ids[after]
            index = max((i for i, m in enumerate(self.messages) if any(m is a for a in anchors)),
                        default=len(self.messages) - 1) + 1
        self.messages.insert(index, message)
        self.name(message, message_id)
        self.bound()

    def find(self, message_id: str) -> ChatMessage | None:
        named = self.ids.get(message_id)
        return named[0] if named else None

    def remove(self, message_id: str) -> bool:
        named = self.ids.pop(message_id, [])
        self.messages = [m for m in self.messages if not any(m is n for n in named)]
        return bool(named)

    def replace_last_assistant(self, content: str) -> None:
        for message in reversed(self.messages):
            if message.role == "assistant" and not message.tool_calls:
                message.content = content
                return

    def _turns(self) -> list[list[ChatMessage]]:
        turns: list[list[ChatMessage]] = []
        for message in self.messages:
            if message.role == "user" or not turns:
                turns.append([])
            turns[-1].append(message)
        return turns

    @staticmethod
    def _size(turn: list[ChatMessage]) -> int:
        return sum(len(m.content or "") + sum(len(c.arguments) for c in m.tool_calls or []) for m in turn)

    def for_llm(self, system_prompt: str, pending: ChatMessage | None = None) -> list[ChatMessage]:
        """System prompt plus the window of turns; ``pending`` is a user message not added yet."""
        turns = self._turns()
        if pending is not None:
            turns.append([pending])
        kept = turns[self._window_index(turns):]
        budget = self.max_chars - len(system_prompt)
        if len(kept) > self.max_turns or self._total(kept) > budget:
            kept = self._moved_on(kept, budget)
        self.dropped_turns = len(turns) - len(kept)
        if self.dropped_turns:
            logger.debug("context: %d older turns left out (turn/char limits)", self.dropped_turns)
        messages = [m for turn in kept for m in turn]
        # a kept window must not start with tool results whose call was dropped
        while messages and messages[0].role == "tool":
            messages.pop(0)
        return [ChatMessage(role="system", content=system_prompt), *messages]

    def move_on_ahead(self, system_prompt: str, next_turn_chars: int = NEXT_TURN_CHARS) -> bool:
        """Move the window now if the next turn (of about ``next_turn_chars``) would cross a limit.

        The move changes the prompt's prefix, so the LLM has to read the kept turns again; done after
        an answer, that reading can happen while the answer plays (``prefill``) rather than between
        the next turn's transcript and its first token (3.2-3.7 s for ~350-470 tokens on 2 cores).
        """
        turns = self._turns()
        kept = turns[self._window_index(turns):]
        budget = self.max_chars - len(system_prompt)
        if len(kept) + 1 <= self.max_turns and self._total(kept) + next_turn_chars <= budget:
            return False
        self._moved_on(kept, budget)
        return True

    def _moved_on(self, kept: list[list[ChatMessage]], budget: int) -> list[list[ChatMessage]]:
        """The window moved forward by a block: down to half the limits."""
        kept = kept[-max(1, self.max_turns // 2):]
        while len(kept) > 1 and self._total(kept) > budget // 2:
            kept = kept[1:]
        self._window_start = kept[0][0]
        return kept

    def _window_index(self, turns: list[list[ChatMessage]]) -> int:
        """Where the window starts: the turn it started at last time, if that turn is still there."""
        for index, turn in enumerate(turns):
            if turn[0] is self._window_start:
                return index
        return 0

    def _total(self, turns: list[list[ChatMessage]]) -> int:
        return sum(self._size(t) for t in turns)
