"""A real mosquitto per test session (and a private one for tests that restart it)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.mqtt.broker import Broker, mosquitto_available


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    if not mosquitto_available():
        pytest.skip("mosquitto, mosquitto_passwd and openssl are needed (apt-get install mosquitto openssl)")
    instance = Broker(tmp_path_factory.mktemp("mosquitto"))
    instance.start()
    yield instance
    instance.stop()


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[Broker]:
    if not mosquitto_available():
        pytest.skip("mosquitto, mosquitto_passwd and openssl are needed")
    instance = Broker(tmp_path / "mosquitto")
    instance.start()
    yield instance
    instance.stop()
