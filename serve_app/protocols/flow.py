"""Flow control for one socket, the same for both protocols.

- Messages in: a token bucket per connection (``aiolimiter``): ``message_burst`` at once, then
  ``messages_per_s``; a message over it is dropped, and the client hears so at most once a second
  (an error per dropped message would double a flood instead of stopping it).
- Backpressure: after each message the adapter waits for room in the session's inbox, so a client
  that sends faster than its session works is slowed at the socket (TCP), not buffered.
- Messages out: a frame the client has not taken within ``stalled_send_s``, or an outbox that
  overflows, means the client is not reading; the socket is then closed with 1008.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Coroutine
from typing import Any

from aiolimiter import AsyncLimiter

from serve_app.session.engine import Session

NOT_READING = 1008  # policy violation: the server will not buffer for a client that does not read
NOT_READING_REASON = "the client is not reading what the server sends"
NOTICE_EVERY_S = 1.0


class SocketFlow:
    def __init__(self, session: Session) -> None:
        self.session = session
        limits = session.options.limits
        self.stalled_send_s = limits.stalled_send_s
        self._messages = AsyncLimiter(limits.message_burst, limits.message_burst / limits.messages_per_s)
        self.refused = 0  # messages dropped for the rate, in all
        self._unreported = 0
        self._noticed_at = float("-inf")
        self.stalled = asyncio.Event()  # a send did not complete in time

    @property
    def not_reading(self) -> bool:
        return self.stalled.is_set() or self.session.outbox.overflowed.is_set()

    async def admit(self) -> bool:
        """Take one message from the bucket; False: over the rate, drop it."""
        if self._messages.has_capacity():
            await self._messages.acquire()  # has capacity: returns at once
            return True
        self.refused += 1
        self._unreported += 1
        return False

    def rate_notice(self) -> str | None:
        """The rate-limit error's text, due at most once a second while messages are being dropped."""
        now = time.monotonic()
        if now - self._noticed_at < NOTICE_EVERY_S:
            return None
        self._noticed_at, count, self._unreported = now, self._unreported, 0
        limits = self.session.options.limits
        return (f"too many messages: {count} dropped (the limit is {limits.messages_per_s:g} a second, "
                f"{limits.message_burst} at once)")

    async def room(self) -> None:
        await self.session.channel.inbox.room()

    async def send(self, sending: Awaitable[Any]) -> bool:
        """Write one frame; False if the client has not taken it within ``stalled_send_s`` (or the write failed)."""
        try:
            await asyncio.wait_for(sending, self.stalled_send_s)
        except TimeoutError:
            self.stalled.set()
            return False
        return True

    async def read_until_stalled(self, reader: Coroutine[Any, Any, None]) -> bool:
        """Run the adapter's read loop until the client hangs up (False) or stops reading (True)."""
        loop = asyncio.get_running_loop()
        reading = loop.create_task(reader)
        watching = loop.create_task(self._stall())
        try:
            await asyncio.wait({reading, watching}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (reading, watching):
                task.cancel()
            await asyncio.gather(reading, watching, return_exceptions=True)
        if reading.done() and not reading.cancelled() and reading.exception() is not None:
            raise reading.exception()
        return self.not_reading

    async def _stall(self) -> None:
        overflow = asyncio.get_running_loop().create_task(self.session.outbox.overflowed.wait())
        stall = asyncio.get_running_loop().create_task(self.stalled.wait())
        try:
            await asyncio.wait({overflow, stall}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            overflow.cancel()
            stall.cancel()
