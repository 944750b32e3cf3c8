"""The web server: uvicorn serving `edged.web.app` on its own thread (inside the daemon) or in the foreground."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import signal
import threading
import time
from pathlib import Path

from edged.config import Config, WebConfig
from edged.errors import ConfigError

log = logging.getLogger(__name__)


def auth_path(cfg: Config, gallery_path: Path) -> Path:
    """`web.auth_file`, else `<gallery>.web-auth` beside the gallery."""
    if cfg.web.auth_file:
        return Path(cfg.web.auth_file).expanduser()
    return gallery_path.with_name(gallery_path.name + ".web-auth")


def is_loopback(bind: str) -> bool:
    if bind == "localhost":
        return True
    try:
        return ipaddress.ip_address(bind).is_loopback
    except ValueError:
        return False


def warn_if_exposed(web: WebConfig) -> None:
    tls = bool(web.tls.cert_file and web.tls.key_file)
    if not is_loopback(web.bind) and not tls:
        log.warning("web: listening on %s:%d without TLS: passwords, faces and names cross the network in clear "
                    "(set web.tls.cert_file and web.tls.key_file)", web.bind, web.port)


class WebServer:
    """uvicorn on a thread: `start()`, `started`, `stopping`, `stop(timeout)`."""

    def __init__(self, app: object, web: WebConfig) -> None:
        import uvicorn

        tls = web.tls
        self.config = uvicorn.Config(app, host=web.bind, port=web.port, log_level="warning", access_log=False,
                                     ssl_certfile=tls.cert_file and str(Path(tls.cert_file).expanduser()),
                                     ssl_keyfile=tls.key_file and str(Path(tls.key_file).expanduser()),
                                     timeout_graceful_shutdown=1, server_header=False, lifespan="off")
        self.web = web
        self.server = uvicorn.Server(self.config)
        self._thread: threading.Thread | None = None
        self.failed: str | None = None

    @property
    def started(self) -> bool:
        return bool(self.server.started)

    @property
    def stopping(self) -> bool:
        return bool(self.server.should_exit)

    def start(self, timeout: float = 10.0) -> None:
        """Serve on a thread; raises ConfigError when the address cannot be bound."""
        warn_if_exposed(self.web)
        self._thread = threading.Thread(target=self._serve, name="edged-web", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        if not self.server.started:
            raise ConfigError(f"web: cannot serve on {self.web.bind}:{self.web.port}"
                              f"{': ' + self.failed if self.failed else ''}")
        scheme = "https" if self.config.ssl_certfile else "http"
        log.info("web: serving %s://%s:%d/", scheme, self.web.bind, self.web.port)

    def _serve(self) -> None:
        try:
            asyncio.run(self.server.serve())
        except BaseException as exc:  # bind errors end in SystemExit inside uvicorn
            self.failed = str(exc) or type(exc).__name__
        if not self.server.started and self.failed is None:
            self.failed = "address in use or not available"

    def stop(self, timeout: float = 2.0) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)

    def run_foreground(self) -> None:
        """Serve until SIGINT/SIGTERM."""
        previous = {sig: signal.signal(sig, lambda *_: self.stop(0.0)) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.start()
            while self._thread is not None and self._thread.is_alive():
                self._thread.join(0.5)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        log.info("web: stopped")
