"""MQTT: the event/control bus, audio calls for devices, and outbound-call dispatch.

``start_bus(manager, "mqtt://host:1883/voxwire", worker_id)`` is what
``voxwire serve --mqtt`` runs; see ``schema`` for the wire format (version 1).
Needs the ``mqtt`` extra (aiomqtt, the maintained successor of asyncio-mqtt).
"""

from transports.mqtt.audio import MqttAudioServer, serve_mqtt_audio
from transports.mqtt.bus import Bus, SessionFeed, start_bus
from transports.mqtt.connection import MqttConnectError, MqttConnection
from transports.mqtt.dispatch import JobDispatcher
from transports.mqtt.schema import SCHEMA_VERSION, CommandError, parse_command
from transports.mqtt.settings import MqttSettings, parse_mqtt_url

__all__ = [
    "SCHEMA_VERSION",
    "Bus",
    "CommandError",
    "JobDispatcher",
    "MqttAudioServer",
    "MqttConnectError",
    "MqttConnection",
    "MqttSettings",
    "SessionFeed",
    "parse_command",
    "parse_mqtt_url",
    "serve_mqtt_audio",
    "start_bus",
]
