"""Voice activity detection: silero-vad (ONNX), stateless and batched across streams.

The recurrent state of every stream travels with the request, so one call per tick can carry
all of an ingress replica's sessions, and ``@serve.batch`` can merge the calls of several
ingress replicas into one ONNX run. A handle call costs ~3 ms; per-frame calls could not scale.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Literal

import numpy as np
import onnxruntime
from pydantic import BaseModel, Field
from ray import serve

from deployments.embedded import silero_vad_onnx
from deployments.errors import ModelInputError

SAMPLE_RATE = 16000
FRAME_SAMPLES = 512  # 32 ms at 16 kHz: the window silero-vad is trained on
CONTEXT_SAMPLES = 64  # silero prepends the previous frame's last 64 samples
HIDDEN_SIZE = 128
STATE_SIZE = 2 * HIDDEN_SIZE + CONTEXT_SAMPLES  # LSTM state (2 x 128) + audio context


class VadOptions(BaseModel):
    model_path: str | None = Field(None, description="silero-vad ONNX file; default: the one in the silero-vad wheel")
    device: Literal["cpu", "cuda"] = Field("cpu", description="cuda needs onnxruntime-gpu")
    intra_op_threads: int = Field(1, ge=1, description="ONNX threads; 1 keeps a replica on its CPU share")
    max_batch_size: int = Field(32, ge=1, description="requests merged into one model run by @serve.batch")
    batch_wait_timeout_s: float = Field(0.002, ge=0, description="how long a batch waits for more requests")


@dataclass
class VadRequest:
    """Frames of many streams plus each stream's state.

    frames: float32 [streams, steps, 512] in [-1, 1] (int16 accepted); states: float32 [streams, 320];
    steps: int [streams], how many leading frames of each row are real (default: all).
    """

    frames: np.ndarray
    states: np.ndarray
    steps: np.ndarray | None = None


@dataclass
class VadResult:
    """probabilities: float32 [streams, steps] (NaN past a row's real frames); states: the next states."""

    probabilities: np.ndarray
    states: np.ndarray


def initial_states(streams: int) -> np.ndarray:
    """Fresh state rows for new streams."""
    return np.zeros((streams, STATE_SIZE), dtype=np.float32)


def validate_request(request: VadRequest) -> VadRequest:
    frames, states = request.frames, request.states
    if not isinstance(frames, np.ndarray) or not isinstance(states, np.ndarray):
        raise ModelInputError("VAD frames and states must be numpy arrays", "bad_audio")
    if frames.dtype == np.int16:
        frames = frames.astype(np.float32) / 32768.0
    if frames.dtype != np.float32:
        raise ModelInputError(f"VAD frames must be float32 or int16, got {frames.dtype}", "bad_audio")
    if frames.ndim == 2:  # one frame per stream
        frames = frames[:, None, :]
    if frames.ndim != 3 or frames.shape[2] != FRAME_SAMPLES:
        raise ModelInputError(
            f"VAD frames must have shape [streams, steps, {FRAME_SAMPLES}] (16 kHz), got {frames.shape}", "bad_audio"
        )
    if frames.shape[0] == 0 or frames.shape[1] == 0:
        raise ModelInputError("VAD request carries no frames", "empty_audio")
    if states.shape != (frames.shape[0], STATE_SIZE) or states.dtype != np.float32:
        raise ModelInputError(
            f"VAD states must be float32 [{frames.shape[0]}, {STATE_SIZE}], got {states.dtype} {states.shape}",
            "bad_state",
        )
    if not (np.isfinite(frames).all() and np.isfinite(states).all()):
        raise ModelInputError("VAD input contains NaN or infinity", "bad_audio")
    steps = request.steps
    if steps is None:
        steps = np.full(frames.shape[0], frames.shape[1], dtype=np.int32)
    steps = np.asarray(steps)
    if steps.shape != (frames.shape[0],) or (steps < 0).any() or (steps > frames.shape[1]).any():
        raise ModelInputError("VAD steps must give, per stream, a frame count within the frames' steps", "bad_state")
    return VadRequest(frames, states, steps.astype(np.int32))


class SileroVad:
    """Runs silero-vad over many streams at once; pure function of (frames, states)."""

    def __init__(self, options: VadOptions) -> None:
        session_options = onnxruntime.SessionOptions()
        session_options.intra_op_num_threads = options.intra_op_threads
        session_options.inter_op_num_threads = 1
        providers = ["CPUExecutionProvider"]
        if options.device == "cuda":
            providers.insert(0, "CUDAExecutionProvider")
        path = options.model_path or str(silero_vad_onnx())
        self.session = onnxruntime.InferenceSession(path, sess_options=session_options, providers=providers)
        self._sample_rate = np.array(SAMPLE_RATE, dtype=np.int64)

    def run(self, request: VadRequest) -> VadResult:
        request = validate_request(request)
        frames, steps = request.frames, request.steps
        states = request.states.copy()
        probabilities = np.full(frames.shape[:2], np.nan, dtype=np.float32)
        for step in range(frames.shape[1]):
            rows = np.nonzero(steps > step)[0]
            if rows.size == 0:
                break
            lstm = states[rows, : 2 * HIDDEN_SIZE].reshape(rows.size, 2, HIDDEN_SIZE).transpose(1, 0, 2)
            context = states[rows, 2 * HIDDEN_SIZE :]
            window = np.concatenate([context, frames[rows, step]], axis=1)
            output, new_lstm = self.session.run(
                None, {"input": window, "state": np.ascontiguousarray(lstm), "sr": self._sample_rate}
            )
            probabilities[rows, step] = output[:, 0]
            states[rows, : 2 * HIDDEN_SIZE] = new_lstm.transpose(1, 0, 2).reshape(rows.size, -1)
            states[rows, 2 * HIDDEN_SIZE :] = window[:, -CONTEXT_SAMPLES:]
        return VadResult(probabilities, states)

    def run_many(self, requests: list[VadRequest]) -> list[VadResult]:
        """One model pass for several requests (rows concatenated, steps padded)."""
        checked = [validate_request(r) for r in requests]
        max_steps = max(r.frames.shape[1] for r in checked)
        frames = np.concatenate(
            [np.pad(r.frames, ((0, 0), (0, max_steps - r.frames.shape[1]), (0, 0))) for r in checked]
        )
        merged = self.run(VadRequest(frames, np.concatenate([r.states for r in checked]),
                                     np.concatenate([r.steps for r in checked])))
        results, start = [], 0
        for r in checked:
            end = start + r.frames.shape[0]
            results.append(VadResult(merged.probabilities[start:end, : r.frames.shape[1]], merged.states[start:end]))
            start = end
        return results


@serve.deployment(name="VAD", max_ongoing_requests=64)
class VoiceActivityDetector:
    """Serve face of SileroVad: ``detect`` merges concurrent calls into one model run."""

    def __init__(self, options: dict | VadOptions | None = None) -> None:
        self.options = VadOptions.model_validate(options or {})
        self.model = SileroVad(self.options)
        self._detect_batch.set_max_batch_size(self.options.max_batch_size)
        self._detect_batch.set_batch_wait_timeout_s(self.options.batch_wait_timeout_s)

    async def detect(self, request: VadRequest) -> VadResult:
        validate_request(request)  # a bad request fails alone, not the batch it would have joined
        return await self._detect_batch(request)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.002)
    async def _detect_batch(self, requests: list[VadRequest]) -> list[VadResult]:
        return await asyncio.to_thread(self.model.run_many, requests)

    async def info(self) -> dict:
        return {"model": "silero-vad", "sample_rate": SAMPLE_RATE, "frame_samples": FRAME_SAMPLES}
