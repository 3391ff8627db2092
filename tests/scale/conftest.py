"""The serving tests share the MQTT tests' real mosquitto fixture."""

from tests.mqtt.conftest import broker, private_broker  # noqa: F401
