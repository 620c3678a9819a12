"""End of turn: Smart Turn v3.2, the probability that the user has finished speaking.

A pause alone cannot tell "what time is it" from "what time is..."; this small ONNX model hears
the intonation in the last 8 s of the turn. One row costs about 0.1 s on one CPU core, so the
deployment merges the sessions that pause at the same moment into one model run
(``@serve.batch``), and on a GPU node the batch runs on CUDA. See shared/notes/smart_turn.md
for the feature recipe.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Literal

import numpy as np
import onnxruntime as ort
from faster_whisper.feature_extractor import FeatureExtractor
from pydantic import BaseModel, Field
from ray import serve

from deployments.errors import ModelInputError

SAMPLE_RATE = 16000
WINDOW_S = 8
WINDOW_SAMPLES = WINDOW_S * SAMPLE_RATE
N_FRAMES = 800
DEFAULT_MODEL_PATH = Path(__file__).resolve().parents[1] / ".models" / "smart-turn-v3.2-cpu.onnx"


class TurnEndOptions(BaseModel):
    model_path: str | None = Field(None, description="Smart Turn ONNX file; default .models/smart-turn-v3.2-cpu.onnx")
    device: Literal["cpu", "cuda"] = Field("cpu", description="cuda needs onnxruntime-gpu")
    intra_op_threads: int = Field(1, ge=1, description="ONNX threads; 1 keeps a replica on its CPU share")
    max_batch_size: int = Field(16, ge=1, description="pauses of different sessions merged into one model run")
    batch_wait_timeout_s: float = Field(0.005, ge=0, description="how long a batch waits for more pauses")


class SmartTurnModel:
    """The end-of-turn model; one instance serves every session of a replica."""

    def __init__(self, model_path: str | Path | None = None, threads: int = 1, device: str = "cpu") -> None:
        self.model_path = Path(model_path) if model_path is not None else DEFAULT_MODEL_PATH
        if not self.model_path.is_file():
            raise FileNotFoundError(
                f"Smart Turn model not found at {self.model_path}; run scripts/fetch_models.sh to extract it")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        providers = ["CPUExecutionProvider"]
        if device == "cuda":
            providers.insert(0, "CUDAExecutionProvider")
        self._session = ort.InferenceSession(str(self.model_path), sess_options=options, providers=providers)
        self._input_name = self._session.get_inputs()[0].name
        self._features = FeatureExtractor(feature_size=80, chunk_length=WINDOW_S)

    def completion_probability(self, audio_16k: np.ndarray) -> float:
        """P(turn complete) for one stretch of 16 kHz mono audio (float32 in [-1, 1] or int16)."""
        return self.completion_probabilities([audio_16k])[0]

    def completion_probabilities(self, audios: list[np.ndarray]) -> list[float]:
        """One probability per clip, all rows in a single model run."""
        if not audios:
            return []
        batch = np.stack([self._log_mel(_last_window(audio)) for audio in audios])
        (probabilities,) = self._session.run(None, {self._input_name: batch})
        return [float(p) for p in probabilities.reshape(-1)]

    def _log_mel(self, window: np.ndarray) -> np.ndarray:
        # Zero mean, unit variance over the whole padded window, as the model was trained.
        normalised = (window - window.mean()) / np.sqrt(window.var() + 1e-7)
        features = self._features(normalised, padding=0)[:, :N_FRAMES]
        return features.astype(np.float32, copy=False)


def _last_window(audio: np.ndarray) -> np.ndarray:
    """The last 8 s as float32, zero-padded at the front: the end of the turn is what matters."""
    samples = np.asarray(audio)
    if samples.ndim == 2 and 1 in samples.shape:
        samples = samples.reshape(-1)
    if samples.ndim != 1:
        raise ValueError(f"expected mono audio (one dimension), got shape {samples.shape}")
    if samples.dtype == np.int16:
        samples = samples.astype(np.float32) / 32768.0
    elif np.issubdtype(samples.dtype, np.floating):
        samples = samples.astype(np.float32, copy=False)
    else:
        raise ValueError(f"expected float32 or int16 samples, got {samples.dtype}")
    samples = samples[-WINDOW_SAMPLES:]
    if len(samples) < WINDOW_SAMPLES:
        samples = np.concatenate([np.zeros(WINDOW_SAMPLES - len(samples), np.float32), samples])
    return samples


def checked_window(audio: np.ndarray) -> np.ndarray:
    """The model's input window, or ModelInputError for audio it cannot take."""
    try:
        return _last_window(audio)
    except ValueError as error:
        raise ModelInputError(str(error), "bad_audio") from error


@serve.deployment(name="TurnEnd", max_ongoing_requests=64)
class TurnEndDetector:
    """Serve face of SmartTurnModel: concurrent ``completion_probability`` calls share one run."""

    def __init__(self, options: dict | TurnEndOptions | None = None) -> None:
        self.options = TurnEndOptions.model_validate(options or {})
        self.model = SmartTurnModel(self.options.model_path, self.options.intra_op_threads, self.options.device)
        self._batch.set_max_batch_size(self.options.max_batch_size)
        self._batch.set_batch_wait_timeout_s(self.options.batch_wait_timeout_s)
        self.runs = 0  # model runs, for the batching test
        self.rows = 0

    async def completion_probability(self, audio_16k: np.ndarray) -> float:
        window = checked_window(audio_16k)  # bad audio fails alone, not the batch it would have joined
        return await self._batch(window)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def _batch(self, windows: list[np.ndarray]) -> list[float]:
        self.runs += 1
        self.rows += len(windows)
        return await asyncio.to_thread(self.model.completion_probabilities, windows)

    async def info(self) -> dict:
        return {"model": "smart-turn-v3.2", "device": self.options.device, "runs": self.runs, "rows": self.rows}
