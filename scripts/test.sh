#!/usr/bin/env bash
# Set up a fresh machine for the tests and run them: lint, format check, then pytest.
#   ./scripts/test.sh            # everything (what CI runs)
#   ./scripts/test.sh -k audio   # extra arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."

# espeak-ng speaks the test sentences (English and other languages); chromium and its
# driver run the studio's page test headless.
missing=""
command -v espeak-ng >/dev/null || missing="$missing espeak-ng"
command -v chromium >/dev/null || missing="$missing chromium"
command -v chromedriver >/dev/null || missing="$missing chromium-driver"
if [ -n "$missing" ]; then
  SUDO=$([ "$(id -u)" -eq 0 ] || echo sudo)
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -r requirements-dev.txt

.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/python -m pytest "$@"
