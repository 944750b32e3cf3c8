#!/usr/bin/env bash
# Install everything edged needs on a fresh Debian/Ubuntu machine:
# system packages (when missing), a virtual environment in .venv/, torch (CPU) and edged itself.
set -euo pipefail
cd "$(dirname "$0")/.."

# chromium + chromium-driver: the web page's browser tests (selenium drives the system Chromium)
APT_PACKAGES=(mosquitto mosquitto-clients libsystemd-dev pkg-config python3-venv systemd chromium chromium-driver)
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

# Home Assistant for tests/test_homeassistant.py (`pytest -m homeassistant`, the second run of scripts/test.sh),
# in its own venv .venv-ha, made once and reused while it holds these pins. 2024.3.3 is the newest release that
# installs on Python 3.11. The second pip run adds, within Home Assistant's own constraints, josepy<2 (with
# josepy 2 every HTTP request fails: "module 'josepy' has no attribute 'ComparableX509'") and the requirements
# of the integrations the test starts, which Home Assistant would otherwise pip-install at its first start.
# EDGED_SKIP_HA=1: no Home Assistant (those tests then skip, saying so).
HA_PYTHON="${EDGED_HA_PYTHON:-$PYTHON}"
HA_SPEC=(homeassistant==2024.3.3)
HA_EXTRAS=("josepy<2" home-assistant-frontend==20240307.0 paho-mqtt==1.6.1 Pillow==10.2.0 PyTurboJPEG==1.7.1
           SQLAlchemy==2.0.27 fnv-hash-fast==0.5.0 janus==1.0.0 psutil-home-assistant==0.0.1 securetar==2024.2.1)
HA_STAMP=".venv-ha/.edged-setup"
if [ "${EDGED_SKIP_HA:-0}" = 1 ]; then
    echo "setup: EDGED_SKIP_HA=1: no Home Assistant venv"
elif [ -x .venv-ha/bin/hass ] && [ "$(cat "$HA_STAMP" 2>/dev/null)" = "${HA_SPEC[*]} ${HA_EXTRAS[*]}" ]; then
    echo "setup: Home Assistant: reusing .venv-ha (${HA_SPEC[*]})"
else
    echo "setup: installing Home Assistant into .venv-ha (${HA_SPEC[*]}; a few minutes)"
    rm -rf .venv-ha
    "$HA_PYTHON" -m venv .venv-ha
    .venv-ha/bin/python -m pip install -q --no-compile "${HA_SPEC[@]}"
    HA_CONSTRAINTS="$(.venv-ha/bin/python -c 'import homeassistant, os; print(os.path.dirname(homeassistant.__file__))')/package_constraints.txt"
    .venv-ha/bin/python -m pip install -q --no-compile -c "$HA_CONSTRAINTS" "${HA_EXTRAS[@]}"
    echo "${HA_SPEC[*]} ${HA_EXTRAS[*]}" > "$HA_STAMP"
fi
echo "setup: done. CLI: .venv/bin/edged"
