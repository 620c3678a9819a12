"""What the caller has heard, from the marks Twilio echoes back.

Twilio buffers the audio we send and plays it at its own pace; a ``mark`` sent after a piece of
audio comes back when that piece has been played (or when a ``clear`` dropped it). So the last
mark echoed for a reply is where the caller's hearing of it ends, and that, not the time we sent
it, is what a barge-in keeps of the reply. Marks sent before a ``clear`` are echoed too; those
echoes say nothing was played and are ignored.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from dataclasses import dataclass

ALL_OF_IT = 10**9  # "heard to the end": TruncateReply clamps it to the audio the reply had
KEPT_REPLIES = 16
MAX_PENDING = 1024  # a peer that never echoes cannot grow this without bound


@dataclass(frozen=True)
class SentMark:
    name: str
    message_id: str  # the reply the audio before it belongs to
    end_ms: float  # where in the reply's audio it stands (math.inf: after all of it)


class Playback:
    def __init__(self) -> None:
        self._pending: deque[SentMark] = deque()  # sent, not yet echoed, in the order sent
        self._cleared: OrderedDict[str, None] = OrderedDict()  # sent before a clear: echoes mean nothing
        self._heard: OrderedDict[str, int] = OrderedDict()  # reply -> ms of it heard for sure
        self._unmarked: str | None = None  # a reply with audio sent after its last mark

    @property
    def playing(self) -> bool:
        """Audio sent that Twilio has not reported played: the caller may be hearing it now."""
        return bool(self._pending) or self._unmarked is not None

    def unmarked(self, message_id: str) -> bool:
        """Audio of this reply was sent after its last mark."""
        return self._unmarked == message_id

    def audio_sent(self, message_id: str) -> None:
        self._unmarked = message_id

    def mark_sent(self, mark: SentMark) -> None:
        self._pending.append(mark)
        self._unmarked = None
        while len(self._pending) > MAX_PENDING:
            self._pending.popleft()

    def echoed(self, name: str) -> bool:
        """Twilio played everything up to mark ``name``; False for a mark it only dropped or never got."""
        if name in self._cleared:
            del self._cleared[name]
            return False
        if not any(mark.name == name for mark in self._pending):
            return False
        while self._pending:  # marks are played in order, so the ones before it were played too
            mark = self._pending.popleft()
            self._record(mark)
            if mark.name == name:
                return True
        return False

    def heard_ms(self, message_id: str) -> int:
        return self._heard.get(message_id, 0)

    def clear(self) -> list[str]:
        """Twilio is told to drop what it holds: the replies cut by it, oldest first."""
        cut = list(dict.fromkeys(mark.message_id for mark in self._pending))
        if self._unmarked is not None and self._unmarked not in cut:
            cut.append(self._unmarked)
        for mark in self._pending:
            self._cleared[mark.name] = None
        while len(self._cleared) > MAX_PENDING:
            self._cleared.popitem(last=False)
        self._pending.clear()
        self._unmarked = None
        return cut

    def _record(self, mark: SentMark) -> None:
        # a millisecond past the mark, so the piece ending there counts in full and the next one
        # not at all (the engine gives a piece's words in proportion to its audio played)
        heard = ALL_OF_IT if math.isinf(mark.end_ms) else math.floor(mark.end_ms) + 1
        self._heard[mark.message_id] = max(heard, self._heard.get(mark.message_id, 0))
        self._heard.move_to_end(mark.message_id)
        while len(self._heard) > KEPT_REPLIES:
            self._heard.popitem(last=False)
