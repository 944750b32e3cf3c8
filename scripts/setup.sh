#!/usr/bin/env bash
# Install everything edged needs on a fresh Debian/Ubuntu machine:
# system packages (when missing), a virtual environment in .venv/, torch (CPU) and edged itself.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(mosquitto libsystemd-dev pkg-config python3-venv)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "setup: installing system packages: ${missing[*]}"
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
# The broker is started by the tests on a free port; keep the system one from owning 1883 needlessly.

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# torch first and pinned: the plain name pulls several GB of CUDA packages. On a machine that reaches
# download.pytorch.org, EDGED_TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu gets the CPU build.
TORCH_SPEC="${EDGED_TORCH_SPEC:-torch==2.13.0}"
TORCH_INDEX=()
[ -n "${EDGED_TORCH_INDEX_URL:-}" ] && TORCH_INDEX=(--index-url "$EDGED_TORCH_INDEX_URL")
.venv/bin/python -m pip install -q "${TORCH_INDEX[@]}" "$TORCH_SPEC"
.venv/bin/python -m pip install -q -e ".[test]"
echo "setup: done. CLI: .venv/bin/edged"
