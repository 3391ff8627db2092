"""A real mosquitto for tests: plain, password and TLS listeners on free ports.

Each broker gets its own directory with a config, a password file
(``agent``/``s3cret``) and a self-signed certificate for 127.0.0.1, made with
openssl and mosquitto_passwd. Run as root, mosquitto would switch to the
``mosquitto`` user and lose access to those files, so the config says
``user root`` then.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

USER = "agent"
PASSWORD = "s3cret"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def mosquitto_available() -> bool:
    return all(shutil.which(tool) or os.path.exists(f"/usr/sbin/{tool}")
               for tool in ("mosquitto", "mosquitto_passwd", "openssl"))


class Broker:
    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.plain_port, self.password_port, self.tls_port = free_port(), free_port(), free_port()
        self.cert = self.dir / "server.crt"
        self.key = self.dir / "server.key"
        self.passwd = self.dir / "passwd"
        self.conf = self.dir / "mosquitto.conf"
        self.log = self.dir / "mosquitto.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._make_files()

    def _make_files(self) -> None:
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", str(self.key), "-out", str(self.cert), "-days", "2", "-subj", "/CN=127.0.0.1",
             "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
            check=True, capture_output=True)
        subprocess.run(["mosquitto_passwd", "-c", "-b", str(self.passwd), USER, PASSWORD],
                       check=True, capture_output=True)
        for path in (self.cert, self.key, self.passwd):
            path.chmod(0o644)
        lines = [
            "per_listener_settings true",
            "persistence false",
            "log_dest stderr",
            "log_type error", "log_type warning", "log_type notice", "log_type information",
        ]
        if os.geteuid() == 0:
            lines.append("user root")
        lines += [
            f"listener {self.plain_port} 127.0.0.1", "allow_anonymous true",
            f"listener {self.password_port} 127.0.0.1", "allow_anonymous false", f"password_file {self.passwd}",
            f"listener {self.tls_port} 127.0.0.1", "allow_anonymous false", f"password_file {self.passwd}",
            f"certfile {self.cert}", f"keyfile {self.key}",
        ]
        self.conf.write_text("\n".join(lines) + "\n")

    def start(self, timeout: float = 10.0) -> None:
        mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([mosquitto, "-c", str(self.conf)], stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.log.read_text()[-2000:]}")
            try:
                for port in (self.plain_port, self.password_port, self.tls_port):
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not open its ports")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def url(self, kind: str = "plain", *, prefix: str = "voxwire", user: str = USER, password: str = PASSWORD,
            ca: bool = True) -> str:
        if kind == "plain":
            return f"mqtt://127.0.0.1:{self.plain_port}/{prefix}"
        if kind == "password":
            return f"mqtt://{user}:{password}@127.0.0.1:{self.password_port}/{prefix}"
        query = f"?ca={self.cert}" if ca else ""
        return f"mqtts://{user}:{password}@127.0.0.1:{self.tls_port}/{prefix}{query}"
