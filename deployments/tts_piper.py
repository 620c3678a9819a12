"""Piper (ONNX, CPU-friendly) synthesis: one float32 piece per sentence Piper finds in the text."""

from __future__ import annotations

import threading
from collections.abc import Generator
from pathlib import Path
from typing import Any

import numpy as np
from piper import PiperVoice, SynthesisConfig

from deployments.embedded import piper_joe_voice
from deployments.errors import ModelInputError

DEFAULT_VOICE = "default"


class PiperBackend:
    """A loaded Piper voice; ``resolve_voice`` maps a request's voice name to a speaker id."""

    name = "piper"

    def __init__(
        self,
        voice_path: Path | None = None,
        config_path: Path | None = None,
        *,
        length_scale: float | None = None,
        noise_scale: float | None = None,
        noise_w_scale: float | None = None,
        use_cuda: bool = False,
    ) -> None:
        if voice_path is None:
            voice_path, embedded_config = piper_joe_voice()
            config_path = config_path or embedded_config
        self._voice = PiperVoice.load(voice_path, config_path=config_path, use_cuda=use_cuda)
        self._length_scale = length_scale
        # The voice samples noise inside its ONNX graph (no seed to set), so two syntheses of one
        # text differ unless both noises are 0; a test or a cache that needs the same audio sets them.
        self._noise_scale = noise_scale
        self._noise_w_scale = noise_w_scale
        config = self._voice.config
        self.sample_rate: int = config.sample_rate
        self._speakers: dict[str, int] = dict(config.speaker_id_map)
        if config.num_speakers > 1 and not self._speakers:
            self._speakers = {str(i): i for i in range(config.num_speakers)}

    @property
    def voices(self) -> list[str]:
        return list(self._speakers) or [DEFAULT_VOICE]

    def info(self) -> dict[str, Any]:
        return {"voices": self.voices, "voice_kind": "speaker"}

    def resolve_voice(self, voice: str | None) -> int | None:
        if voice is None or voice == "":
            return None  # Piper picks the voice's default speaker
        if self._speakers:
            if voice in self._speakers:
                return self._speakers[voice]
            if voice.isdigit() and int(voice) in self._speakers.values():
                return int(voice)
        elif voice == DEFAULT_VOICE:
            return None
        raise ModelInputError(
            f"unknown voice {voice!r}; this Piper voice offers {', '.join(self.voices)}", "unknown_voice"
        )

    def stream(
        self, text: str, voice: int | None, stop: threading.Event
    ) -> Generator[np.ndarray, None, None]:
        config = SynthesisConfig(
            speaker_id=voice,
            length_scale=self._length_scale,
            noise_scale=self._noise_scale,
            noise_w_scale=self._noise_w_scale,
        )
        for sentence in self._voice.synthesize(text, config):
            if stop.is_set():
                return
            yield sentence.audio_float_array
