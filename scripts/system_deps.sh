#!/usr/bin/env bash
# Debian packages the tests need. Idempotent; installs only what is missing.
#   chromium: the real browser the web client tests drive through Playwright (tests/test_web_client.py).
#   postgresql: the server the shared-store tests start in a temp dir (tests/postgres_server.py).
set -euo pipefail

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)

if [ ${#missing[@]} -eq 0 ]; then
  echo "system packages: all present"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi
echo "system packages: installing ${missing[*]}"
$SUDO apt-get update
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y "${missing[@]}"
