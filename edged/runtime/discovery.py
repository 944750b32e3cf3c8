"""Topic names and Home Assistant MQTT discovery for one device (pure: payloads only, no I/O).

Home Assistant's MQTT integration reads retained configs on `<discovery_prefix>/<component>/<node>/<object>/config`;
an empty retained config removes the entity. Entities of a person are keyed on the gallery's stable person id
(`person_<id>`), so a rename keeps the entity (and its history and automations) and only changes its name.
Every config carries the QoS Home Assistant should subscribe with and an `origin` block.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from typing import Any

from edged import __version__
from edged.config import HomeAssistantConfig, MQTTConfig
from edged.gallery.store import name_slug
from edged.types import PersonEntity

ONLINE = "online"
OFFLINE = "offline"
ORIGIN = {"name": "edged", "sw_version": __version__}


def topic_segment(name: str) -> str:
    """A person's name as one MQTT topic level ('/', '+', '#', spaces and controls become '_')."""
    return re.sub(r"[/+#\s\x00-\x1f]", "_", name) or "_"


def object_id(name: str) -> str:
    """A Home Assistant object id for a name: lowercase letters, digits and '_' (`edged enroll` refuses two
    names with one slug)."""
    return name_slug(name)


def person_key(person: PersonEntity) -> str:
    """The object id of a person's entities: the stable gallery id (the name's slug when there is none)."""
    return f"person_{person.id}" if person.id else f"person_{object_id(person.name)}"


class Topics:
    """Topic names for one device."""

    def __init__(self, cfg: MQTTConfig, ha: HomeAssistantConfig, device_id: str) -> None:
        self.base = f"{cfg.topic_prefix.rstrip('/')}/{device_id}"
        self.availability = f"{self.base}/availability"
        self.event = f"{self.base}/event"
        self.snapshot = f"{self.base}/snapshot"
        self.last_person = f"{self.base}/last_person"
        self.access = f"{self.base}/access"
        self.status = f"{self.base}/status"
        self.node = f"edged_{device_id}"
        self.discovery = ha.discovery_prefix.rstrip("/")
        self.ha_status = f"{self.discovery}/status"
        #: What this device may have left retained: used to find and clear stale topics after a restart.
        self.own_configs = f"{self.discovery}/+/{self.node}/+/config"
        self.own_people = f"{self.base}/person/#"

    def person(self, name: str) -> str:
        return f"{self.base}/person/{topic_segment(name)}"

    def last_seen(self, name: str) -> str:
        """ISO 8601 time a person was last seen; never published for someone not seen since enrolled."""
        return f"{self.person(name)}/last_seen"

    def camera_state(self, camera: str) -> str:
        return f"{self.base}/camera/{topic_segment(camera)}/state"

    def camera_event(self, camera: str) -> str:
        """Several cameras: the events of one camera (the same payloads as `event`, which has every camera's)."""
        return f"{self.base}/camera/{topic_segment(camera)}/event"

    def camera_availability(self, camera: str) -> str:
        return f"{self.base}/camera/{topic_segment(camera)}/availability"

    @property
    def cameras_availability(self) -> str:
        """Several cameras: online while at least one of them delivers frames."""
        return f"{self.base}/cameras/availability"

    def trigger(self, kind: str, name: str | None = None) -> str:
        return f"{self.base}/trigger/{kind}" + (f"/{topic_segment(name)}" if name else "")

    def config(self, component: str, obj: str) -> str:
        return f"{self.discovery}/{component}/{self.node}/{obj}/config"


def discovery_messages(topics: Topics, device_id: str, camera: str, people: Iterable[PersonEntity],
                       snapshots: bool, access: bool = False, qos: int = 1, cameras: Sequence[str] = ()
                       ) -> dict[str, dict[str, Any]]:
    """Home Assistant discovery configs: config topic -> payload. `cameras`: several cameras in one daemon (each
    gets its connectivity, state, fps and face event entities; what needs a camera is available while any camera
    is, a camera's face event while that camera is)."""
    many = len(cameras) > 1
    device = {"identifiers": [topics.node], "name": f"edged {device_id}", "manufacturer": "edged",
              "model": "edged face recognition", "sw_version": __version__}
    common: dict[str, Any] = {"availability_topic": topics.availability, "payload_available": ONLINE,
                              "payload_not_available": OFFLINE, "device": device, "origin": ORIGIN, "qos": qos}
    # what needs the camera: unavailable while it is down, not "nobody there"
    seeing: dict[str, Any] = {
        "device": device, "origin": ORIGIN, "qos": qos, "availability_mode": "all",
        "availability": [{"topic": topics.availability, "payload_available": ONLINE,
                          "payload_not_available": OFFLINE},
                         {"topic": topics.cameras_availability if many else topics.camera_availability(camera),
                          "payload_available": ONLINE, "payload_not_available": OFFLINE}]}
    face_template = ('{"event_type": "{{ value_json.type }}", "person": {{ value_json.person | tojson }}, '
                     '"confidence": {{ value_json.confidence }}, "track_id": {{ value_json.track_id }}, '
                     '"visit_id": {{ value_json.visit_id | tojson }}, '
                     '"candidate": {{ value_json.candidate | tojson }}, '
                     '"reason": {{ value_json.reason | tojson }}, '
                     '"liveness": {{ value_json.liveness | default(none) | tojson }}, '
                     + ('"camera": {{ value_json.camera | tojson }}}' if many else f'"camera": "{camera}"}}'))
    out: dict[str, dict[str, Any]] = {
        topics.config("event", "face"): {
            **seeing, "name": "Face", "unique_id": f"{topics.node}_face_event", "state_topic": topics.event,
            "event_types": ["recognized", "unknown", "left"], "value_template": face_template,
            "icon": "mdi:face-recognition",
        },
        topics.config("sensor", "last_person"): {
            **common, "name": "Last person", "unique_id": f"{topics.node}_last_person",
            "state_topic": topics.last_person, "value_template": "{{ value_json.person }}",
            "json_attributes_topic": topics.last_person, "icon": "mdi:account-check",
        },
        topics.config("sensor", "unknown_visitors"): {
            **common, "name": "Unknown visitors today", "unique_id": f"{topics.node}_unknown_visitors",
            "state_topic": topics.status, "value_template": "{{ value_json.unknown_today }}",
            "state_class": "total_increasing", "icon": "mdi:account-question",
        },
        topics.config("binary_sensor", "camera"): {
            **common, "name": "Camera", "unique_id": f"{topics.node}_camera", "device_class": "connectivity",
            "state_topic": topics.camera_availability(camera), "payload_on": ONLINE, "payload_off": OFFLINE,
            "entity_category": "diagnostic",
        },
        topics.config("device_automation", "unknown"): {
            "automation_type": "trigger", "topic": topics.trigger("unknown"), "type": "unknown", "subtype": "face",
            "device": device, "origin": ORIGIN, "qos": qos,
        },
    }
    fps_unit = {"unit_of_measurement": "fps", "state_class": "measurement"}
    if many:
        del out[topics.config("binary_sensor", "camera")]
        for name in cameras:
            key = f"camera_{object_id(name)}"
            out[topics.config("binary_sensor", key)] = {
                **common, "name": f"Camera {name}", "unique_id": f"{topics.node}_{key}",
                "device_class": "connectivity", "state_topic": topics.camera_availability(name),
                "payload_on": ONLINE, "payload_off": OFFLINE, "entity_category": "diagnostic"}
            out[topics.config("sensor", f"{key}_state")] = {
                **common, "name": f"Camera {name} state", "unique_id": f"{topics.node}_{key}_state",
                "state_topic": topics.camera_state(name), "entity_category": "diagnostic"}
            out[topics.config("event", f"{key}_face")] = {
                **seeing, "availability": [seeing["availability"][0], {
                    "topic": topics.camera_availability(name), "payload_available": ONLINE,
                    "payload_not_available": OFFLINE}],
                "name": f"Camera {name} face", "unique_id": f"{topics.node}_{key}_face_event",
                "state_topic": topics.camera_event(name), "event_types": ["recognized", "unknown", "left"],
                "value_template": face_template, "icon": "mdi:face-recognition"}
            out[topics.config("sensor", f"{key}_fps")] = {
                **common, "name": f"Camera {name} frames per second", "unique_id": f"{topics.node}_{key}_fps",
                "state_topic": topics.status, "value_template": f"{{{{ value_json.cameras[{json.dumps(name)}].fps }}}}",
                "entity_category": "diagnostic", **fps_unit}
    for key, name, template, extra in (
            ("fps", "Frames per second", "{{ value_json.fps }}", fps_unit),
            ("camera_state", "Camera state", "{{ value_json.camera }}", {}),
            ("queue", "Broker queue", "{{ value_json.queue }}", {"state_class": "measurement"}),
            ("gallery", "People enrolled", "{{ value_json.people }}", {"state_class": "measurement"}),
            ("dropped", "Dropped frames", "{{ value_json.frames_dropped }}", {"state_class": "total_increasing"}),
            ("dropped_percent", "Frames dropped (last minute)", "{{ value_json.frames_dropped_percent }}",
             {"unit_of_measurement": "%", "state_class": "measurement"})):
        out[topics.config("sensor", key)] = {
            **common, "name": name, "unique_id": f"{topics.node}_{key}", "state_topic": topics.status,
            "value_template": template, "entity_category": "diagnostic", **extra}
    if many:  # per camera above
        del out[topics.config("sensor", "fps")], out[topics.config("sensor", "camera_state")]
    if access:
        out[topics.config("event", "access")] = {
            **common, "name": "Access", "unique_id": f"{topics.node}_access_event", "state_topic": topics.access,
            "event_types": ["granted", "denied", "alarm"],
            "value_template": ('{"event_type": "{{ value_json.decision }}", "door": {{ value_json.door | tojson }}, '
                               '"person": {{ value_json.person | tojson }}, '
                               '"reasons": {{ value_json.reasons | tojson }}, '
                               '"liveness": {{ value_json.liveness | default(none) | tojson }}}'),
            "icon": "mdi:door-closed-lock",
        }
    if snapshots:
        out[topics.config("image", "snapshot")] = {
            **common, "name": "Snapshot", "unique_id": f"{topics.node}_snapshot", "image_topic": topics.snapshot,
            "content_type": "image/jpeg",
        }
    for person in people:
        key = person_key(person)
        label = person.display_name or person.name
        out[topics.config("binary_sensor", key)] = {
            **seeing, "name": label, "unique_id": f"{topics.node}_{key}",
            "device_class": "presence", "state_topic": topics.person(person.name),
            # an empty payload (a topic being cleared) renders empty and is ignored, without a warning
            "value_template": "{{ value_json.state if value_json is defined else '' }}",
            "payload_on": "present", "payload_off": "absent",
            "json_attributes_topic": topics.person(person.name),
            "json_attributes_template": "{{ value_json | tojson if value_json is defined else '{}' }}",
        }
        out[topics.config("sensor", f"{key}_last_seen")] = {
            **common, "name": f"{label} last seen", "unique_id": f"{topics.node}_{key}_last_seen",
            "device_class": "timestamp", "state_topic": topics.last_seen(person.name),
        }
        out[topics.config("device_automation", f"recognized_{key}")] = {
            "automation_type": "trigger", "topic": topics.trigger("recognized", person.name), "type": "recognized",
            "subtype": label, "device": device, "origin": ORIGIN, "qos": qos,
        }
    return out
