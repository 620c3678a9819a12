"""Shared fixtures: the speech corpus from ../shared, the embedded models loaded once per run, and the
fake Ollama HTTP server."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SPEECH_DIR = REPO_ROOT.parent / "shared" / "speech"

from tests.fake_ollama import FakeOllama, RunningFakeOllama


@dataclass(frozen=True)
class Clip:
    file: str
    transcript: str
    kind: str
    language: str
    duration_s: float

    @property
    def path(self) -> Path:
        return SPEECH_DIR / self.file

    def pcm16(self) -> np.ndarray:
        """The clip's samples as int16 at 16 kHz (every corpus file is 16 kHz mono PCM16)."""
        import soundfile

        samples, rate = soundfile.read(self.path, dtype="int16")
        assert rate == 16000, f"{self.file} is {rate} Hz"
        return samples


def load_manifest() -> list[Clip]:
    manifest = SPEECH_DIR / "manifest.jsonl"
    if not manifest.exists():
        raise FileNotFoundError(f"speech corpus not found at {SPEECH_DIR}; tests expect ../shared beside the repo")
    clips = []
    for line in manifest.read_text().splitlines():
        entry = json.loads(line)
        clips.append(Clip(entry["file"], entry["transcript"], entry["kind"], entry.get("language", ""),
                          float(entry["duration_s"])))
    return clips


@pytest.fixture(scope="session")
def speech_clips() -> list[Clip]:
    return load_manifest()


@pytest.fixture(scope="session")
def clip_by_name(speech_clips):
    by_name = {clip.file: clip for clip in speech_clips}
    return lambda name: by_name[name]


@pytest.fixture
def fake_ollama():
    server = RunningFakeOllama(FakeOllama())
    fake = server.start()
    yield fake
    server.stop()


@pytest.fixture(scope="session")
def models():
    """The embedded models in-process, loaded once for every session-engine and protocol test."""
    from serve_app.clients.in_process import InProcessModels

    return InProcessModels()


@pytest.fixture(scope="session")
def smart_turn_model():
    from deployments.turn_end import SmartTurnModel

    return SmartTurnModel()
