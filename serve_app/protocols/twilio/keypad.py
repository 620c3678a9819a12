"""Keys the caller presses (Twilio ``dtmf`` messages), gathered into one message for the conversation.

A caller typing a number presses several keys; answering each key would talk over the next one.
So keys are gathered until ``#``, or until ``pause_s`` pass without another key, or until
``MAX_KEYS``, and then delivered as one user message in words the LLM reads as it would a
spoken turn: ``The caller pressed 4 2 # on the phone keypad.``
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

MAX_KEYS = 32
END_KEY = "#"


def keypad_text(keys: list[str]) -> str:
    return f"The caller pressed {' '.join(keys)} on the phone keypad."


class Keypad:
    def __init__(self, deliver: Callable[[str], None], pause_s: float) -> None:
        self.deliver, self.pause_s = deliver, pause_s
        self._keys: list[str] = []
        self._timer: asyncio.TimerHandle | None = None

    def press(self, key: str) -> None:
        self._keys.append(key)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if key == END_KEY or len(self._keys) >= MAX_KEYS or self.pause_s <= 0:
            self.flush()
        else:
            self._timer = asyncio.get_running_loop().call_later(self.pause_s, self.flush)

    def flush(self) -> None:
        self._timer = None
        keys, self._keys = self._keys, []
        if keys:
            self.deliver(keypad_text(keys))

    def close(self) -> None:
        """The call ended: keys not yet delivered are dropped with it."""
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._keys = None, []
