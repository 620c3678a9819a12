"""Input audio against the wall clock: a burst ahead of it, then no faster than real time.

A microphone cannot send faster than real time, but a client can, and every second of audio costs
resampling, VAD and memory. A recorded question sent at once (as the README's SDK example and the
tests do) is a burst of up to ``burst_s`` seconds; after that the bucket refills at one second of
audio per second. Audio over it is dropped, with one ``audio_too_fast`` error per run of drops.
"""

from __future__ import annotations

from aiolimiter import AsyncLimiter


class AudioPace:
    def __init__(self, burst_s: float) -> None:
        self._bucket = AsyncLimiter(burst_s, burst_s)  # capacity burst_s seconds, leaking 1 s per second
        self.dropping = False  # in a run of dropped audio (its error was sent)
        self.dropped_s = 0.0

    async def admit(self, seconds: float) -> bool:
        """True if this much audio may go in now; takes it from the bucket."""
        if seconds > self._bucket.max_rate or not self._bucket.has_capacity(seconds):
            self.dropped_s += seconds
            return False
        await self._bucket.acquire(seconds)  # has capacity: returns at once
        return True
