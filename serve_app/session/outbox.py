"""Events waiting to be written to the socket: stale-generation dropping, and a bound.

After a barge-in the session raises the floor; audio of the cancelled response that is already
queued is skipped here, so nothing from it reaches the client after ``stop_speaking``.

A client that stops reading would make this queue grow for ever (20,000 unread pings once cost the
ingress 131 MB). So it holds at most ``max_events`` events and ``max_bytes`` (approximate) bytes:
one more and it overflows: what is queued is dropped, nothing more is taken, ``overflowed`` is set
and the writer ends, and the adapter closes the socket (1008).
"""

from __future__ import annotations

import asyncio

from serve_app.session.events import AudioOut, Event, Outgoing

_CLOSED = object()
_EVENT_OVERHEAD = 64  # the frame's JSON keys and framing, roughly


def event_size(event: Event) -> int:
    """About what an event costs to hold and send: its audio, text and lists (not a serialisation)."""
    if isinstance(event, AudioOut):
        return len(event.pcm16) + _EVENT_OVERHEAD
    size = _EVENT_OVERHEAD
    for value in vars(event).values():
        if isinstance(value, str | bytes):
            size += len(value)
        elif isinstance(value, list | dict):
            size += 256 * len(value)
    return size


class Outbox:
    def __init__(self, max_events: int = 2000, max_bytes: int = 8 * 1024 * 1024) -> None:
        self._queue: asyncio.Queue = asyncio.Queue()
        self._floor = 0
        self.max_events, self.max_bytes = max_events, max_bytes
        self.bytes = 0
        self.peak_events = self.peak_bytes = 0  # the most it ever held, for tests and logs
        self.dropped = 0  # events not taken after the overflow
        self.overflowed = asyncio.Event()

    @property
    def events(self) -> int:
        return self._queue.qsize()

    def put(self, item: Outgoing) -> None:
        if self.overflowed.is_set():
            self.dropped += 1
            return
        size = event_size(item.event)
        if self.events + 1 > self.max_events or self.bytes + size > self.max_bytes:
            self._overflow()
            return
        self._queue.put_nowait(item)
        self.bytes += size
        self.peak_events = max(self.peak_events, self.events)
        self.peak_bytes = max(self.peak_bytes, self.bytes)

    def _overflow(self) -> None:
        self.dropped += 1 + self.events
        while not self._queue.empty():
            self._queue.get_nowait()
        self.bytes = 0
        self.overflowed.set()
        self._queue.put_nowait(_CLOSED)

    def drop_generations_below(self, generation: int) -> None:
        self._floor = generation

    def close(self) -> None:
        self._queue.put_nowait(_CLOSED)

    async def get(self) -> Outgoing | None:
        """The next live event, or None once the session has ended (or the client stopped reading)."""
        while True:
            item = await self._queue.get()
            if item is _CLOSED:
                return None
            self.bytes -= event_size(item.event)
            if item.generation is None or item.generation >= self._floor:
                return item
