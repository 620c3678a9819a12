"""Messages a session's own helper tasks put in its inbox (model results, response milestones)."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np

from serve_app.session.response import Response


def new_message_id() -> str:
    return f"msg_{uuid.uuid4().hex[:20]}"


@dataclass
class Verdict:
    pause_id: int
    probability: float | None


@dataclass
class Transcribed:
    utterance: int
    result: Any  # Transcription | ServiceError
    partial: bool
    message_id: str = ""
    speculative: Any = None  # the SpeculativeTurn it was asked for, if any
    partial_span: tuple[int, int] | None = None  # a partial's audio, as timeline positions


@dataclass
class Described:
    image: bytes
    prompt: str | None
    result: Any  # str | ServiceError
    message_id: str | None = None


@dataclass
class FirstAudio:
    generation: int
    done: asyncio.Future


@dataclass
class ResponseFinished:
    response: Response


@dataclass
class PendingInput:
    """The input of the last turn, kept so a failed turn can be retried."""

    kind: str  # stt | llm
    audio: np.ndarray | None = None
