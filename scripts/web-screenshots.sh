#!/usr/bin/env bash
# Screenshots of every page of the web page (docs/web/*.png), taken by the browser test
# (tests/test_web_browser.py: headless Chromium against `edged run` on the Hamilton clip).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p docs/web
EDGED_WEB_SCREENSHOTS="$PWD/docs/web" .venv/bin/pytest -q -p no:cacheprovider -m browser tests/test_web_browser.py
ls -l docs/web
