"""Speculative turn end: transcribe and start answering at the first pause, commit when the turn ends.

The end-of-turn model decides after a 200 ms pause whether the user is done; whisper and the LLM
take longer than that. So at the pause the utterance so far is transcribed in parallel with that
decision, and an answer is drafted from the transcript with its output held back. When the turn
ends at that same pause the draft is released as the response (its first audio may already be
waiting); when the user speaks again, or the turn ends elsewhere, the draft and the transcription
are cancelled on their handles. Nothing of a draft reaches the client or the store before commit.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from deployments.llm import ToolCall
from serve_app.metrics import TURN_METRICS
from serve_app.session.events import Event
from serve_app.session.response import Response, ResponseHost


class HeldHost:
    """A response's host that holds every event and write until ``release``, then passes them on."""

    def __init__(self, host: ResponseHost) -> None:
        self._host = host
        self._held: list[tuple[Event, int]] | None = []
        self._released = asyncio.Event()

    @property
    def released(self) -> bool:
        return self._held is None

    def release(self) -> None:
        held, self._held = self._held or [], None
        for event, generation in held:
            self._host.emit(event, generation)
        self._released.set()

    def emit(self, event: Event, generation: int) -> None:
        if self._held is not None:
            self._held.append((event, generation))
        else:
            self._host.emit(event, generation)

    async def first_audio(self, generation: int) -> None:
        await self._released.wait()  # the first chunk is synthesised and waits here for the commit
        await self._host.first_audio(generation)

    async def store_tool_call(self, call: ToolCall) -> None:
        await self._released.wait()
        await self._host.store_tool_call(call)

    async def finish_tool_call(self, call_id: str, result: Any, status: str) -> None:
        await self._released.wait()
        await self._host.finish_tool_call(call_id, result, status)

    async def store_reply(self, text: str) -> int:
        await self._released.wait()
        return await self._host.store_reply(text)


@dataclass(frozen=True)
class Draft:
    """A speculative answer handed to the responder, its output still held.

    The responder releases it only after it has made the draft's generation the session's: the
    held events carry that generation, and the channel drops any that is not current, so a release
    before the switch would lose the reply's first words (the reply would end with no transcript).
    """

    response: Response
    host: HeldHost

    def release(self) -> None:
        self.host.release()
        TURN_METRICS.speculation.labels(outcome="answer_used").inc()

    async def cancel(self) -> None:
        await self.response.cancel()


@dataclass
class SpeculativeTurn:
    """The utterance up to one pause, transcribed (and maybe answered) before the turn is known to end."""

    pause_id: int
    start_sample: int
    end_sample: int
    message_id: str
    utterance: int  # the session's count of utterances when this one paused
    transcription: asyncio.Task | None = None
    result: Any = None  # Transcription | ServiceError, once back
    transcript_at: float | None = None
    draft: Draft | None = None
    committed: bool = False
    _cancelled: bool = field(default=False, repr=False)

    @property
    def transcribed(self) -> bool:
        return self.result is not None

    def matches(self, start_sample: int, end_sample: int) -> bool:
        return (start_sample, end_sample) == (self.start_sample, self.end_sample)

    def take_draft(self) -> Draft | None:
        """The held response, if it is still running; the caller now owns it (and releases it)."""
        draft, self.draft = self.draft, None
        if draft is None or draft.response.task.done():
            return None
        return draft

    async def cancel(self, reason: str) -> None:
        """Stop the transcription and the draft on their handles (both cancel downstream)."""
        if self._cancelled:
            return
        self._cancelled = True
        TURN_METRICS.speculation.labels(outcome=f"cancelled_{reason}").inc()
        if self.transcription is not None and not self.transcription.done():
            self.transcription.cancel()
        if self.draft is not None:
            draft, self.draft = self.draft, None
            await draft.cancel()
