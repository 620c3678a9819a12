"""The end-of-turn model as the engine calls it: ``await completion_probability(audio) -> float``.

``TurnEndClient`` calls the TurnEnd deployment, which batches the pauses of every session of every
ingress replica; ``InProcessTurnEnd`` runs the same model in this process (tests, tools).
"""

from __future__ import annotations

import asyncio

import numpy as np
from ray.serve.handle import DeploymentHandle

from deployments.turn_end import WINDOW_SAMPLES, SmartTurnModel
from serve_app.clients.errors import as_service_error


def last_window(audio: np.ndarray) -> np.ndarray:
    """Only the last 8 s reach the model: send no more than that over the wire."""
    return np.ascontiguousarray(audio[-WINDOW_SAMPLES:]) if audio.ndim == 1 else audio


class TurnEndClient:
    def __init__(self, handle: DeploymentHandle, timeout_s: float) -> None:
        self.handle, self.timeout_s = handle, timeout_s

    async def completion_probability(self, audio: np.ndarray) -> float:
        response = self.handle.completion_probability.remote(last_window(np.asarray(audio)))
        try:
            return await asyncio.wait_for(response, self.timeout_s)
        except asyncio.CancelledError:
            response.cancel()  # cancelling our task does not reach the replica by itself
            raise
        except Exception as error:
            response.cancel()
            raise as_service_error("turn_end", error) from error


class InProcessTurnEnd:
    def __init__(self, model: SmartTurnModel) -> None:
        self.model = model
        self._lock = asyncio.Lock()  # one ONNX run at a time keeps a 2-core machine responsive

    async def completion_probability(self, audio: np.ndarray) -> float:
        async with self._lock:
            return await asyncio.to_thread(self.model.completion_probability, audio)
