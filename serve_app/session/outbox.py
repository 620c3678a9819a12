"""Events waiting to be written to the socket, with stale-generation dropping.

After a barge-in the session raises the floor; audio of the cancelled response that is already
queued is skipped here, so nothing from it reaches the client after ``stop_speaking``.
"""

from __future__ import annotations

import asyncio

from serve_app.session.events import Outgoing

_CLOSED = object()


class Outbox:
    def __init__(self) -> None:
        self._queue: asyncio.Queue = asyncio.Queue()
        self._floor = 0

    def put(self, item: Outgoing) -> None:
        self._queue.put_nowait(item)

    def drop_generations_below(self, generation: int) -> None:
        self._floor = generation

    def close(self) -> None:
        self._queue.put_nowait(_CLOSED)

    async def get(self) -> Outgoing | None:
        """The next live event, or None once the session has ended."""
        while True:
            item = await self._queue.get()
            if item is _CLOSED:
                return None
            if item.generation is None or item.generation >= self._floor:
                return item
