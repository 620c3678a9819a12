"""What the engine needs from an end-of-turn model: one probability per pause.

The model runs in the TurnEnd deployment (deployments/turn_end.py); the ingress reaches it through
``serve_app.clients.turn_end.TurnEndClient``, tests and tools through ``InProcessTurnEnd``.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np


class SmartTurnRunner(Protocol):
    async def completion_probability(self, audio: np.ndarray) -> float:
        """P(the user has finished their turn) for the turn's audio so far (16 kHz mono)."""
        ...
