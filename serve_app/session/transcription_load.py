"""Which transcriptions an ingress asks for while the STT service is busy.

A partial transcript is a courtesy; a final one is what the person waits on. A partial queued in
front of someone's final transcript delays that person's answer, so partials are asked for only
while no final transcript from this ingress is outstanding, and only a few at a time. Measured
with bench/load.py (100 sessions, ten people finishing at the same instant, 2 cores, four
interleaved runs): end of command -> transcript_final P50 13.1 and 14.9 s with this rule, 16.0
and 21.8 s without it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class TranscriptionLoad:
    def __init__(self, max_partials_in_flight: int = 2) -> None:
        self.max_partials = max_partials_in_flight
        self.finals = 0
        self.partials = 0

    def partial_allowed(self) -> bool:
        return self.finals == 0 and self.partials < self.max_partials

    @contextmanager
    def in_flight(self, partial: bool) -> Iterator[None]:
        if partial:
            self.partials += 1
        else:
            self.finals += 1
        try:
            yield
        finally:
            if partial:
                self.partials -= 1
            else:
                self.finals -= 1
