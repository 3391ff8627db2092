"""Where the broker is and how to log in: the ``--mqtt`` URL.

``mqtt[s]://[user[:password]@]host[:port][/prefix][?ca=/path/ca.pem&keepalive=30]``

* ``mqtts`` turns TLS on (default port 8883, else 1883); ``ca`` names the CA
  file that signed the broker's certificate (the system CAs otherwise);
* a user given without a password takes it from ``VOXWIRE_MQTT_PASSWORD``, so
  the secret need not appear in a process listing;
* the path is the topic prefix (default ``voxwire``), one or more levels.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

DEFAULT_PREFIX = "voxwire"
PASSWORD_ENV = "VOXWIRE_MQTT_PASSWORD"
_FORBIDDEN_IN_LEVEL = str.maketrans({"/": "_", "+": "_", "#": "_", "\x00": "_"})


@dataclass(slots=True, frozen=True)
class MqttSettings:
    """A parsed ``--mqtt`` URL."""

    host: str
    port: int = 1883
    prefix: str = DEFAULT_PREFIX
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    ca_file: str | None = None
    keepalive: int = 30

    @property
    def address(self) -> str:
        """``host:port`` as a user wrote it, for messages (never the password)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def tls_context(self) -> ssl.SSLContext | None:
        """A verifying client context (TLS 1.2+), or None for plain TCP."""
        if not self.tls:
            return None
        context = ssl.create_default_context(cafile=self.ca_file)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context


def parse_mqtt_url(url: str) -> MqttSettings:
    """Parse the ``--mqtt`` option; raises ValueError naming what is wrong."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("mqtt", "mqtts"):
        raise ValueError(f"--mqtt must start with mqtt:// or mqtts://, got {scheme or 'no scheme'!r}")
    if not parts.hostname:
        raise ValueError("--mqtt needs a host, e.g. mqtt://broker:1883")
    tls = scheme == "mqtts"
    try:
        port = parts.port or (8883 if tls else 1883)
    except ValueError as exc:
        raise ValueError(f"--mqtt port is not a number in 1-65535: {exc}") from None
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    if username and password is None:
        password = os.environ.get(PASSWORD_ENV)
    prefix = parts.path.strip("/") or DEFAULT_PREFIX
    if any(not level or level != topic_level(level) or level.startswith("$") for level in prefix.split("/")):
        raise ValueError(f"--mqtt topic prefix {prefix!r} must be non-empty levels without + # $ or empty parts")
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = set(query) - {"ca", "keepalive"}
    if unknown:
        raise ValueError(f"--mqtt has unknown options {sorted(unknown)}; known: ca, keepalive")
    ca_file = query.get("ca", [None])[-1] or None
    if ca_file is not None:
        if not tls:
            raise ValueError("--mqtt ca= only makes sense with mqtts://")
        if not os.path.isfile(ca_file):
            raise ValueError(f"--mqtt CA file {ca_file} does not exist")
    keepalive = int(query.get("keepalive", ["30"])[-1])
    return MqttSettings(
        host=parts.hostname, port=port, prefix=prefix, username=username, password=password,
        tls=tls, ca_file=ca_file, keepalive=keepalive,
    )


def topic_level(value: str) -> str:
    """``value`` made safe as one topic level (no ``/ + #``, no leading ``$``)."""
    level = value.translate(_FORBIDDEN_IN_LEVEL) or "_"
    return "_" + level[1:] if level.startswith("$") else level
