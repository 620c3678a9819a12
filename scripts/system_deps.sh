#!/usr/bin/env bash
# Debian packages the tests need. Idempotent; installs only what is missing.
set -euo pipefail
echo "system packages: none needed yet"
