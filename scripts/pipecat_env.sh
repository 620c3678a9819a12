#!/usr/bin/env bash
# A separate environment for Pipecat, the client of tests/test_pipecat_realtime.py: pipecat-ai 1.14
# pins protobuf < 7, and Ray 2.60's gRPC code in .venv needs protobuf 7, so the two cannot share
# an environment. Only the client runs here (tests/pipecat_client.py); the server under test runs
# in .venv. Idempotent; used by `make test`.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
venv="$here/.venv-pipecat"
python="${PYTHON:-python3}"
test -d "$venv" || "$python" -m venv "$venv"
"$venv/bin/pip" install --quiet --upgrade pip
"$venv/bin/pip" install --quiet "pipecat-ai[openai]==1.14.0"
"$venv/bin/python" -c "from pipecat.services.openai.realtime.llm import OpenAIRealtimeLLMService; print('pipecat environment ready')"
