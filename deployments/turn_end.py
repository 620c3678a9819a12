"""Smart Turn v3.2: the probability that the user has finished their turn, from the last 8 s of audio.

A pause alone cannot tell "what time is it" from "what time is..."; this small ONNX model hears
the intonation. Calls block (about 0.1 s per row on one core): the engine runs them in a thread,
and batches rows when several sessions pause at once. See notes/smart_turn.md for the recipe.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
from faster_whisper.feature_extractor import FeatureExtractor

SAMPLE_RATE = 16000
WINDOW_S = 8
WINDOW_SAMPLES = WINDOW_S * SAMPLE_RATE
N_FRAMES = 800
DEFAULT_MODEL_PATH = Path(__file__).resolve().parents[2] / ".models" / "smart-turn-v3.2-cpu.onnx"


class SmartTurnModel:
    """The end-of-turn model on CPU; one instance can serve every session of a process."""

    def __init__(self, model_path: str | Path | None = None, threads: int = 1) -> None:
        self.model_path = Path(model_path) if model_path is not None else DEFAULT_MODEL_PATH
        if not self.model_path.is_file():
            raise FileNotFoundError(
                f"Smart Turn model not found at {self.model_path}; run scripts/fetch_models.sh to extract it")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(str(self.model_path), sess_options=options,
                                             providers=["CPUExecutionProvider"])
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
