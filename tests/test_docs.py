"""What the docs say about names users type into Home Assistant matches what edged's discovery makes of them.

Home Assistant derives an MQTT entity's id from its device's name and its own name
(`<component>.<slug(device name)>_<slug(entity name)>`, tests/test_homeassistant.py checks it against a real
Home Assistant), not from the `unique_id` (`edged_<device>_person_<id>`).
"""

from __future__ import annotations

import re

import pytest

from edged.config import HomeAssistantConfig, MQTTConfig
from edged.runtime.discovery import Topics, discovery_messages
from edged.types import PersonEntity
from tests.conftest import ROOT

pytestmark = pytest.mark.pure


def slug(text: str) -> str:
    """Home Assistant's slugify for plain ASCII names: lower case, runs of anything else as one '_'."""
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def entity_ids(device_id: str, people: list[PersonEntity]) -> dict[str, str]:
    """unique_id -> the entity id Home Assistant derives, for every entity edged announces."""
    topics = Topics(MQTTConfig(), HomeAssistantConfig(), device_id)
    out = {}
    for topic, payload in discovery_messages(topics, device_id, "front", people, snapshots=True).items():
        if "unique_id" in payload:
            component = topic.split("/")[1]
            out[payload["unique_id"]] = f"{component}.{slug(payload['device']['name'])}_{slug(payload['name'])}"
    return out


def test_daemon_docs_give_the_entity_ids_home_assistant_derives() -> None:
    docs = (ROOT / "docs" / "daemon.md").read_text()
    lin = PersonEntity("lin-manuel-miranda", "Lin-Manuel Miranda", id=1)
    ids = entity_ids("door", [lin])
    assert ids["edged_door_person_1"] == "binary_sensor.edged_door_lin_manuel_miranda"
    for unique_id in ("edged_door_face_event", "edged_door_person_1", "edged_door_person_1_last_seen",
                      "edged_door_last_person", "edged_door_snapshot"):
        assert f"`{ids[unique_id]}`" in docs, ids[unique_id]
    assert "_person_<name>" not in docs  # the old, wrong entity id
    assert "`edged_door_person_<gallery id>`" in docs  # the unique_id, named as such
