"""Running under systemd: sd_notify (READY, WATCHDOG, STATUS, STOPPING) and journald logging.

Notifications go through systemd-python's `sd_notify` only when `$NOTIFY_SOCKET` is set (i.e. a
`Type=notify` unit); otherwise every call is a no-op. Logs go to journald when started by
systemd (`$JOURNAL_STREAM` or `$INVOCATION_ID` set) and to stderr otherwise.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping

log = logging.getLogger(__name__)

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: paho-mqtt's own log, shown only when debugging.
PAHO_LOGGER = "edged.runtime.mqtt.paho"


class Notifier:
    """sd_notify for one process; does nothing outside systemd."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.enabled = bool(env.get("NOTIFY_SOCKET"))
        self.sent: list[str] = []  # what was sent (for diagnostics)
        #: How often to send WATCHDOG=1 (half of WatchdogSec), or None when no watchdog is set.
        self.watchdog_interval_s: float | None = None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        if self.enabled and usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_interval_s = int(usec) / 1e6 / 2.0

    def notify(self, message: str) -> bool:
        if not self.enabled:
            return False
        from systemd import daemon

        try:
            ok = bool(daemon.notify(message))
        except OSError as exc:  # the socket went away: systemd is stopping us anyway
            log.debug("sd_notify failed: %s", exc)
            return False
        if ok:
            self.sent.append(message.split("=", 1)[0])
        return ok

    def ready(self, status: str = "") -> bool:
        return self.notify("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={text}")

    def stopping(self, status: str = "") -> bool:
        return self.notify("STOPPING=1" + (f"\nSTATUS={status}" if status else ""))


def under_systemd(environ: Mapping[str, str] | None = None) -> bool:
    """Started by systemd (its stderr is connected to the journal, or it has an invocation id)."""
    env = os.environ if environ is None else environ
    return bool(env.get("JOURNAL_STREAM") or env.get("INVOCATION_ID"))


def setup_logging(level: str | int = "INFO", target: str = "auto", environ: Mapping[str, str] | None = None) -> str:
    """Send the root logger to journald or stderr; returns the target chosen ("journald" or "stderr")."""
    chosen = target
    if target == "auto":
        chosen = "journald" if under_systemd(environ) else "stderr"
    handler: logging.Handler
    if chosen == "journald":
        try:
            from systemd.journal import JournalHandler

            handler = JournalHandler(SYSLOG_IDENTIFIER="edged")
            handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        except (ImportError, OSError):
            chosen = "stderr"
    if chosen == "stderr":
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # paho's chatter only when debugging
    logging.getLogger(PAHO_LOGGER).setLevel(logging.WARNING if root.level > logging.DEBUG else logging.NOTSET)
    return chosen
