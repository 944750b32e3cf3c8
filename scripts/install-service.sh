#!/usr/bin/env bash
# Install edged as a systemd service (run as root from a checkout):
#   * a system user `edged` (member of `video`, for /dev/video*),
#   * a virtualenv in $PREFIX (default /opt/edged/.venv) with edged installed from this checkout,
#   * /etc/edged/edged.yaml (from config/edged.yaml, kept when present) and /etc/edged/mqtt_password
#     (an empty file, mode 0600, kept when present; systemd hands it over with LoadCredential=),
#   * /var/lib/edged (mode 0700, the gallery and models), systemd/edged.service and its drop-in
#     edged.service.d/config.conf (`edged service dropin`: IPAddressAllow= for the config's MQTT broker and
#     network camera, DeviceAllow= for access control's GPIO chips; the unit itself allows only loopback).
# It does not enable or start the service.
set -euo pipefail

PREFIX=${PREFIX:-/opt/edged}
SRC=$(cd "$(dirname "$0")/.." && pwd)
UNIT=/etc/systemd/system/edged.service
DROPIN=/etc/systemd/system/edged.service.d/config.conf

if [ "$(id -u)" -ne 0 ]; then
    echo "install-service.sh: run as root (sudo $0)" >&2
    exit 1
fi
for tool in python3 runuser systemd-analyze; do
    command -v "$tool" >/dev/null || { echo "install-service.sh: $tool not found" >&2; exit 1; }
done

if ! id edged >/dev/null 2>&1; then
    useradd --system --home-dir /var/lib/edged --no-create-home --shell /usr/sbin/nologin edged
fi
getent group video >/dev/null && usermod -a -G video edged

# The service user must be able to run the interpreter the venv links to: the system python3, not a
# pyenv/conda one under a private home directory.
PYTHON=${PYTHON:-$( [ -x /usr/bin/python3 ] && echo /usr/bin/python3 || command -v python3 )}
install -d -m 0755 "$PREFIX"
[ -x "$PREFIX/.venv/bin/python" ] || "$PYTHON" -m venv "$PREFIX/.venv"
if ! runuser -u edged -- "$PREFIX/.venv/bin/python" -c "" 2>/dev/null; then
    echo "install-service.sh: user edged cannot run $PREFIX/.venv/bin/python ($(readlink -f "$PREFIX/.venv/bin/python")); remove $PREFIX/.venv and set PYTHON= to a python3 outside private directories" >&2
    exit 1
fi
"$PREFIX/.venv/bin/pip" install --quiet --upgrade pip
# torch first and pinned, as scripts/setup.sh does (EDGED_TORCH_SPEC, EDGED_TORCH_INDEX_URL).
TORCH_SPEC="${EDGED_TORCH_SPEC:-torch==2.13.0}"
TORCH_INDEX=()
[ -n "${EDGED_TORCH_INDEX_URL:-}" ] && TORCH_INDEX=(--index-url "$EDGED_TORCH_INDEX_URL")
"$PREFIX/.venv/bin/pip" install --quiet "${TORCH_INDEX[@]}" "$TORCH_SPEC"
"$PREFIX/.venv/bin/pip" install --quiet "$SRC"

install -d -m 0750 -o root -g edged /etc/edged
[ -e /etc/edged/edged.yaml ] || install -m 0640 -o root -g edged "$SRC/config/edged.yaml" /etc/edged/edged.yaml
[ -e /etc/edged/mqtt_password ] || install -m 0600 -o root -g root /dev/null /etc/edged/mqtt_password
install -d -m 0700 -o edged -g edged /var/lib/edged

install -m 0644 "$SRC/systemd/edged.service" "$UNIT"
sed -i "s|/opt/edged/.venv/bin/edged|$PREFIX/.venv/bin/edged|" "$UNIT"
# The unit allows only loopback: the drop-in allows the config's broker and camera (again after editing it).
"$PREFIX/.venv/bin/edged" service dropin --config /etc/edged/edged.yaml --output "$DROPIN"
systemd-analyze verify "$UNIT"
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload
else
    echo "install-service.sh: systemd is not running here; run 'systemctl daemon-reload' once it is" >&2
fi

cat <<EOF
edged installed in $PREFIX. Next:
  1. edit /etc/edged/edged.yaml (camera.source, mqtt.host/username), check it and let the unit reach the
     broker and camera it names (the unit allows only loopback; this rewrites $DROPIN):
       $PREFIX/.venv/bin/edged check-config /etc/edged/edged.yaml
       $PREFIX/.venv/bin/edged service dropin --config /etc/edged/edged.yaml --output $DROPIN
  2. put the MQTT password (if any) into /etc/edged/mqtt_password
  3. enroll people as the service user:
       sudo -u edged $PREFIX/.venv/bin/edged --gallery /var/lib/edged/gallery.db enroll NAME PHOTO...
  4. systemctl daemon-reload && systemctl enable --now edged && journalctl -u edged -f
EOF
