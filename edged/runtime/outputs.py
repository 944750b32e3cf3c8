"""The sinks a config asks for: the one place where outputs are chosen (add new outputs here)."""

from __future__ import annotations

from edged.config import Config, mqtt_password
from edged.runtime.sinks import EventSink


def build_sinks(cfg: Config) -> list[EventSink]:
    """Every output the config enables, in the order they get each item."""
    sinks: list[EventSink] = []
    if cfg.mqtt.enabled:
        from edged.runtime.mqtt import MqttPublisher, MqttSink

        publisher = MqttPublisher(cfg.mqtt, cfg.device_id, cfg.camera.name, mqtt_password(cfg.mqtt),
                                  cfg.homeassistant, cfg.snapshots.enabled)
        sinks.append(MqttSink(publisher, cfg.snapshots))
    return sinks
