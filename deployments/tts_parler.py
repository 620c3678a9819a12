"""Parler-TTS synthesis (GPU): a speaker description steers the voice; audio streams while it generates.

``generate`` runs in its own thread and feeds a ``ParlerTTSStreamer``; a stopping criterion that
watches the caller's ``stop`` event ends generation within one decoding step once nobody listens.
Needs the optional ``parler`` extra; weights are read from a local directory only.
"""

from __future__ import annotations

import threading
from collections.abc import Generator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from parler_tts import ParlerTTSForConditionalGeneration, ParlerTTSStreamer
from transformers import AutoTokenizer, StoppingCriteria, StoppingCriteriaList

from deployments.errors import ModelInputError

MAX_DESCRIPTION_CHARS = 1000
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class _StopWhenSet(StoppingCriteria):
    def __init__(self, stop: threading.Event) -> None:
        self._stop = stop

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        return torch.full(
            (input_ids.shape[0],), self._stop.is_set(), dtype=torch.bool, device=input_ids.device
        )


class ParlerBackend:
    """A Parler-TTS model loaded from a local directory; a request's voice is a speaker description."""

    name = "parler"

    def __init__(
        self,
        model_path: Path | str,
        *,
        device: str = "cuda",
        dtype: str = "auto",
        description: str,
        play_steps_s: float = 0.5,
        max_audio_s: float = 30.0,
    ) -> None:
        model_path = Path(model_path)
        if not (model_path / "config.json").is_file():
            raise FileNotFoundError(f"{model_path} is not a Parler-TTS model directory (no config.json)")
        if dtype == "auto":
            dtype = "float32" if device == "cpu" else "bfloat16"
        self._device = torch.device(device)
        self._model = ParlerTTSForConditionalGeneration.from_pretrained(
            model_path, torch_dtype=_DTYPES[dtype], local_files_only=True
        ).to(self._device)
        self._model.eval()
        self._tokenizer = AutoTokenizer.from_pretrained(model_path, local_files_only=True)
        self._description = description
        codec = self._model.audio_encoder.config
        self.sample_rate: int = codec.sampling_rate
        # The streamer's overlap window is (play_steps - num_codebooks) frames: keep it positive.
        self._play_steps = max(round(codec.frame_rate * play_steps_s), self._model.decoder.num_codebooks + 6)
        self._max_new_tokens = max(round(codec.frame_rate * max_audio_s), 1)

    def info(self) -> dict[str, Any]:
        return {"voices": [], "voice_kind": "description", "default_description": self._description}

    def resolve_voice(self, voice: str | None) -> str:
        if voice is None or not voice.strip():
            return self._description
        if len(voice) > MAX_DESCRIPTION_CHARS:
            raise ModelInputError(
                f"voice description has {len(voice)} characters; at most {MAX_DESCRIPTION_CHARS}",
                "voice_too_long",
            )
        return voice

    def stream(self, text: str, voice: str, stop: threading.Event) -> Generator[np.ndarray, None, None]:
        description = self._tokenizer(voice, return_tensors="pt").to(self._device)
        prompt = self._tokenizer(text, return_tensors="pt").to(self._device)
        streamer = ParlerTTSStreamer(self._model, device=self._device, play_steps=self._play_steps)
        failure: list[BaseException] = []

        def generate() -> None:
            try:
                with torch.inference_mode():
                    self._model.generate(
                        input_ids=description.input_ids,
                        attention_mask=description.attention_mask,
                        prompt_input_ids=prompt.input_ids,
                        prompt_attention_mask=prompt.attention_mask,
                        streamer=streamer,
                        stopping_criteria=StoppingCriteriaList([_StopWhenSet(stop)]),
                        do_sample=True,  # the model's generation_config keeps its other settings
                        max_new_tokens=self._max_new_tokens,
                    )
            except Exception as exc:  # noqa: BLE001 - re-raised on the consumer's side
                failure.append(exc)
            finally:  # ends the consumer's loop even when generate failed before streamer.end()
                streamer.audio_queue.put(streamer.stop_signal)

        thread = threading.Thread(target=generate, name="parler-generate", daemon=True)
        thread.start()
        try:
            for audio in streamer:
                if audio.size:
                    yield audio.astype(np.float32, copy=False)
            if failure:
                raise failure[0]
        finally:
            stop.set()
            thread.join()
