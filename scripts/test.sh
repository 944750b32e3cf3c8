#!/usr/bin/env bash
# Run edged's checks: ruff, then the test suite (needs ../shared beside the checkout, or EDGED_SHARED).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check edged tests scripts
exec .venv/bin/pytest -q "$@"
