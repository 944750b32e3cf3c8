#!/usr/bin/env bash
# Run edged's checks: ruff, then the test suite (needs ../shared beside the checkout, or EDGED_SHARED).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check edged tests scripts
if [ "$#" -gt 0 ]; then  # a chosen selection (e.g. `-m homeassistant`, a test file): that one run
    exec .venv/bin/pytest -q "$@"
fi
status=0
.venv/bin/pytest -q || status=$?
# Second run: the slow checks (whole liveness clips and attack sets), edged against a real Home Assistant
# (tests/test_homeassistant.py; .venv-ha from scripts/setup.sh) and the web page in headless Chromium
.venv/bin/pytest -q -rsxX -m "slow or homeassistant or browser" || status=$?
exit "$status"
