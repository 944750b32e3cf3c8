"""Topic names and Home Assistant MQTT discovery for one device (pure: payloads only, no I/O).

Home Assistant's MQTT integration reads retained configs on `<discovery_prefix>/<component>/<node>/<object>/config`;
an empty retained config removes the entity.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from edged import __version__
from edged.config import HomeAssistantConfig, MQTTConfig
from edged.types import PersonEntity

ONLINE = "online"
OFFLINE = "offline"


def topic_segment(name: str) -> str:
    """A person's name as one MQTT topic level ('/', '+', '#', spaces and controls become '_')."""
    return re.sub(r"[/+#\s\x00-\x1f]", "_", name) or "_"


def object_id(name: str) -> str:
    """A Home Assistant object id for a name: lowercase letters, digits and '_'."""
    return re.sub(r"[^a-z0-9_]+", "_", name.lower()).strip("_") or "person"


class Topics:
    """Topic names for one device."""

    def __init__(self, cfg: MQTTConfig, ha: HomeAssistantConfig, device_id: str) -> None:
        self.base = f"{cfg.topic_prefix.rstrip('/')}/{device_id}"
        self.availability = f"{self.base}/availability"
        self.event = f"{self.base}/event"
        self.snapshot = f"{self.base}/snapshot"
        self.last_person = f"{self.base}/last_person"
        self.node = f"edged_{device_id}"
        self.discovery = ha.discovery_prefix.rstrip("/")
        self.ha_status = f"{self.discovery}/status"

    def person(self, name: str) -> str:
        return f"{self.base}/person/{topic_segment(name)}"

    def config(self, component: str, obj: str) -> str:
        return f"{self.discovery}/{component}/{self.node}/{obj}/config"


def discovery_messages(topics: Topics, device_id: str, camera: str, people: Iterable[PersonEntity],
                       snapshots: bool) -> dict[str, dict[str, Any]]:
    """Home Assistant discovery configs: config topic -> payload."""
    device = {"identifiers": [topics.node], "name": f"edged {device_id}", "manufacturer": "edged",
              "model": "edged face recognition", "sw_version": __version__}
    common = {"availability_topic": topics.availability, "payload_available": ONLINE,
              "payload_not_available": OFFLINE, "device": device}
    out: dict[str, dict[str, Any]] = {
        topics.config("event", "face"): {
            **common, "name": "Face", "unique_id": f"{topics.node}_face_event", "state_topic": topics.event,
            "event_types": ["recognized", "unknown", "left"],
            "value_template": ('{"event_type": "{{ value_json.type }}", "person": {{ value_json.person | tojson }}, '
                               '"confidence": {{ value_json.confidence }}, "track_id": {{ value_json.track_id }}, '
                               f'"camera": "{camera}"}}'),
            "icon": "mdi:face-recognition",
        },
        topics.config("sensor", "last_person"): {
            **common, "name": "Last person", "unique_id": f"{topics.node}_last_person",
            "state_topic": topics.last_person, "value_template": "{{ value_json.person }}",
            "json_attributes_topic": topics.last_person, "icon": "mdi:account-check",
        },
    }
    if snapshots:
        out[topics.config("image", "snapshot")] = {
            **common, "name": "Snapshot", "unique_id": f"{topics.node}_snapshot", "image_topic": topics.snapshot,
            "content_type": "image/jpeg",
        }
    for person in people:
        oid = f"person_{object_id(person.name)}"
        out[topics.config("binary_sensor", oid)] = {
            **common, "name": person.display_name or person.name, "unique_id": f"{topics.node}_{oid}",
            "device_class": "presence", "state_topic": topics.person(person.name),
            "value_template": "{{ value_json.state }}", "payload_on": "present", "payload_off": "absent",
            "json_attributes_topic": topics.person(person.name),
        }
    return out


