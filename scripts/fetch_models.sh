#!/usr/bin/env bash
# Model files that ship inside registry packages but are not importable as-is. Idempotent.
set -euo pipefail
echo "embedded models: all shipped by installed wheels"
