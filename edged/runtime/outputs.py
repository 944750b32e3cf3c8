"""The sinks a config asks for: the one place where outputs are chosen (add new outputs here)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from edged.config import Config, mqtt_password
from edged.embed.base import Embedder
from edged.runtime.sinks import EventSink
from edged.types import StreamItem


def build_sinks(cfg: Config, gallery_path: Path | None = None, embedder: Embedder | None = None,
                emit: Callable[[StreamItem], None] | None = None, liveness: bool = False) -> list[EventSink]:
    """Every output the config enables, in the order they get each item. `emit` feeds the access controller's
    decisions back into the stream (so the MQTT and audit sinks get them)."""
    sinks: list[EventSink] = []
    publisher = None
    if cfg.mqtt.enabled:
        from edged.runtime.mqtt import MqttPublisher, MqttSink

        outbox = gallery_path.with_name(gallery_path.name + ".outbox") if gallery_path is not None else None
        publisher = MqttPublisher(cfg.mqtt, cfg.device_id, cfg.camera.name, mqtt_password(cfg.mqtt),
                                  cfg.homeassistant, cfg.snapshots.enabled, access=cfg.access.enabled,
                                  outbox=outbox, cameras=[c.name for c in cfg.cameras])
        sinks.append(MqttSink(publisher, cfg.snapshots))
    if gallery_path is not None and embedder is not None and cfg.unknowns.enabled:
        from edged.runtime.unknowns_sink import UnknownsSink

        sinks.append(UnknownsSink(gallery_path, cfg.unknowns, cfg.camera.name, embedder.name, embedder.version))
    if gallery_path is not None and emit is not None and cfg.access.enabled:
        from edged.runtime.access import AccessController, config_version

        sinks.append(AccessController(cfg, gallery_path, emit, publisher, liveness_enabled=liveness))
        if cfg.audit.enabled:
            from edged.runtime.audit_sink import AuditSink

            sinks.append(AuditSink(gallery_path, cfg.audit, config_version(cfg)))
    if gallery_path is not None and cfg.web.enabled:
        sinks.append(web_sink(cfg, gallery_path))
    if gallery_path is not None and embedder is not None and cfg.fleet.enabled:
        sinks.append(fleet_sink(cfg, gallery_path, embedder.version))
    return sinks


def fleet_sink(cfg: Config, gallery_path: Path, embedder_version: str) -> EventSink:
    """The fleet sync as a sink; the box's keys are checked here (FleetError: one line, at start)."""
    from edged.config import fleet_box, fleet_dir
    from edged.fleet.keys import load_box
    from edged.fleet.sync import FleetSync
    from edged.runtime.fleet_sink import FleetSink

    keys = load_box(fleet_dir(cfg, gallery_path), str(cfg.fleet.id), fleet_box(cfg))
    password = mqtt_password(cfg.mqtt)
    return FleetSink(lambda health: FleetSync(cfg.fleet, cfg.mqtt, password, keys, gallery_path, embedder_version,
                                              health), cfg.camera.name)


def web_sink(cfg: Config, gallery_path: Path) -> EventSink:
    """The web page as a sink: events and the frame tap feed it; it starts and stops the server."""
    from edged.models.embedders import embedder_from_config
    from edged.web.app import WebContext, create_app
    from edged.web.auth import AuthFile
    from edged.web.live import WebSink
    from edged.web.server import WebServer, auth_path

    sink = WebSink(cfg.device_id, cfg.camera.name, gallery_path, cfg.web, cameras=[c.name for c in cfg.cameras])
    ctx = WebContext(cfg, gallery_path, AuthFile(auth_path(cfg, gallery_path)), live=sink,
                     make_embedder=lambda name: embedder_from_config(cfg, name),
                     tls=bool(cfg.web.tls.cert_file and cfg.web.tls.key_file))
    sink.server = WebServer(create_app(ctx), cfg.web)
    return sink
