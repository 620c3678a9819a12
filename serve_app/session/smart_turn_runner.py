"""Runs the end-of-turn model off the event loop, one shared model per ingress replica."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import numpy as np

from serve_app.session.smart_turn import SmartTurnModel

logger = logging.getLogger(__name__)


class SmartTurnRunner:
    def __init__(self, model: SmartTurnModel) -> None:
        self.model = model
        self._lock = asyncio.Lock()  # one ONNX run at a time keeps a 2-core replica responsive

    @classmethod
    def load(cls, path: Path) -> SmartTurnRunner | None:
        """The runner, or None (fixed-silence endpointing) when the model file is missing."""
        try:
            return cls(SmartTurnModel(path))
        except FileNotFoundError as missing:
            logger.warning("end-of-turn model unavailable, using fixed silence: %s", missing)
            return None

    async def completion_probability(self, audio_16k: np.ndarray) -> float:
        async with self._lock:
            return await asyncio.to_thread(self.model.completion_probability, audio_16k)
