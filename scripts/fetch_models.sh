#!/usr/bin/env bash
# Model files that ship inside registry packages but cannot be installed as packages. Idempotent.
#
# Smart Turn v3.2 (end-of-turn model, BSD-2-Clause) ships inside the pipecat-ai 1.14.0 wheel, but
# pipecat-ai cannot be installed beside Ray 2.60 (it pins protobuf < 7 and Ray's gRPC code then
# fails to load). So: download that wheel without dependencies and extract the one ONNX file.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
dest="$here/.models/smart-turn-v3.2-cpu.onnx"
if [ -s "$dest" ]; then
  echo "smart turn model present: $dest"
  exit 0
fi
pip_bin="${PIP:-$here/.venv/bin/pip}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$pip_bin" download --quiet --no-deps pipecat-ai==1.14.0 -d "$tmp"
mkdir -p "$here/.models"
"$here/.venv/bin/python" - "$tmp" "$dest" <<'PY'
import glob, sys, zipfile
wheel = glob.glob(sys.argv[1] + "/pipecat_ai-1.14.0-*.whl")[0]
member = "pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx"
with zipfile.ZipFile(wheel) as archive, open(sys.argv[2], "wb") as out:
    out.write(archive.read(member))
PY
echo "smart turn model extracted: $dest ($(stat -c %s "$dest") bytes)"
