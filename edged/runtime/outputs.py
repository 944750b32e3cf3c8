"""The sinks a config asks for: the one place where outputs are chosen (add new outputs here)."""

from __future__ import annotations

from pathlib import Path

from edged.config import Config, mqtt_password
from edged.embed.base import Embedder
from edged.runtime.sinks import EventSink


def build_sinks(cfg: Config, gallery_path: Path | None = None, embedder: Embedder | None = None) -> list[EventSink]:
    """Every output the config enables, in the order they get each item."""
    sinks: list[EventSink] = []
    if cfg.unknowns.enabled and gallery_path is not None and embedder is not None:
        from edged.runtime.unknowns_sink import UnknownsSink

        sinks.append(UnknownsSink(gallery_path, cfg.unknowns, cfg.camera.name, embedder.name, embedder.version))
    if cfg.mqtt.enabled:
        from edged.runtime.mqtt import MqttPublisher, MqttSink

        publisher = MqttPublisher(cfg.mqtt, cfg.device_id, cfg.camera.name, mqtt_password(cfg.mqtt),
                                  cfg.homeassistant, cfg.snapshots.enabled)
        sinks.append(MqttSink(publisher, cfg.snapshots))
    return sinks
