"""A fleet of boxes sharing one gallery over the MQTT broker they already run.

* `keys`: the fleet's root key and each box's Ed25519 key and certificate (`edged fleet init/join/admit`).
* `records`: one person's (or ignore label's) signed, versioned state: the unit of replication (pure).
* `state`: the gallery side: what changed locally since the last sync, applying a record in one transaction.
* `sync`: the MQTT side: retained records per person, each box's retained health, the sync thread.
"""
