"""Speech to text for one session: partial transcripts while the user talks, final ones per turn.

A partial decodes only the audio since its anchor (the last speculative transcript, or the last
long partial), and puts the text already transcribed before its own, so its cost stays flat
however long the user talks. Results come back through the inbox as ``Transcribed``.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from serve_app.clients.models import ModelServices, ServiceError
from serve_app.session.audio_input import SAMPLE_RATE, InputAudio
from serve_app.session.channel import SessionChannel
from serve_app.session.inbox import Transcribed
from serve_app.session.options import SessionOptions
from serve_app.session.speculation import SpeculativeTurn
from serve_app.session.transcription_load import TranscriptionLoad

logger = logging.getLogger(__name__)

PARTIAL_WINDOW_S = 6  # a partial covering this much audio is frozen and the next one starts after it


class Transcriber:
    def __init__(self, channel: SessionChannel, services: ModelServices, stt_load: TranscriptionLoad,
                 audio: InputAudio, options: SessionOptions) -> None:
        self.channel, self.services, self.audio = channel, services, audio
        self.stt_load = stt_load  # shared by the host's sessions
        self.partials_enabled = options.partial_transcripts
        self.partial_interval_ms = options.partial_interval_ms
        self._finals: set[str] = set()  # committed turns whose transcript is not back yet
        self._partial_in_flight = False
        self._last_partial_at = 0
        self._anchor = 0  # partial transcripts decode from here (timeline position) ...
        self._prefix = ""  # ... and put this text, already transcribed, before theirs

    @property
    def busy(self) -> bool:
        """A committed turn's transcript is still on its way."""
        return bool(self._finals)

    def new_utterance(self, start_sample: int, anchor: int) -> None:
        self._last_partial_at = start_sample
        self._anchor, self._prefix = anchor, ""

    def continue_after(self, end_sample: int, text: str) -> None:
        """``text`` is the utterance up to ``end_sample``: partials go on from there."""
        self._anchor, self._prefix = end_sample, text

    def final(self, utterance: int, audio: np.ndarray, message_id: str) -> None:
        self._finals.add(message_id)
        self.channel.spawn(self._transcribe(utterance, audio, partial=False, message_id=message_id))

    def awaiting(self, message_id: str) -> None:
        """A speculative transcript still in flight became a turn's final one."""
        self._finals.add(message_id)

    def arrived(self, message_id: str) -> None:
        self._finals.discard(message_id)

    def again(self, utterance: int, audio: np.ndarray) -> None:
        """A failed turn's audio, for retry_turn."""
        self.channel.spawn(self._transcribe(utterance, audio, partial=False))

    def speculate(self, utterance: int, audio: np.ndarray, spec: SpeculativeTurn) -> None:
        spec.transcription = self.channel.spawn(self._transcribe(utterance, audio, partial=False,
                                                                 message_id=spec.message_id, speculative=spec))

    def maybe_partial(self, utterance: int, position: int, utterance_start: int, wanted: bool) -> None:
        if not (wanted and self.partials_enabled) or self._partial_in_flight:
            return
        if not self.stt_load.partial_allowed():
            return
        if (position - self._last_partial_at) * 1000 < self.partial_interval_ms * SAMPLE_RATE:
            return
        self._last_partial_at = position
        self._partial_in_flight = True
        anchor = max(self._anchor, utterance_start)
        audio = self.audio.slice(anchor, position)
        self.channel.spawn(self._transcribe(utterance, audio, partial=True, partial_span=(anchor, position)))

    def partial_text(self, message: Transcribed, current: bool) -> str | None:
        """The text to show for a partial result; None if it is stale (``current``: same utterance, in speech)."""
        self._partial_in_flight = False
        if not current or isinstance(message.result, ServiceError) or not message.result.text:
            return None
        text = " ".join(t for t in (self._prefix, message.result.text.strip()) if t)
        anchor, end = message.partial_span
        if anchor == self._anchor and (end - anchor) >= PARTIAL_WINDOW_S * SAMPLE_RATE:
            self._anchor, self._prefix = end, text  # long enough: freeze it
        return text

    async def _transcribe(self, utterance: int, audio: np.ndarray, partial: bool, message_id: str = "",
                          speculative: SpeculativeTurn | None = None,
                          partial_span: tuple[int, int] | None = None) -> None:
        try:
            with self.stt_load.in_flight(partial):
                result: Any = await self.services.transcribe(audio)
        except ServiceError as error:
            result = error
        except Exception as error:  # the result must come back, or the turn waits for it for ever
            logger.error("transcribing failed", exc_info=error)
            result = ServiceError("stt", "internal_error", f"transcribing failed ({type(error).__name__}: {error})"[:300])
        self.channel.submit(Transcribed(utterance, result, partial, message_id, speculative, partial_span))
