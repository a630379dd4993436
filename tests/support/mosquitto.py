"""Debian's mosquitto as a subprocess on a loopback port, for the bridge tests: started on a
port picked first (mosquitto cannot say which port it bound), stopped and started again on
the same port, with its log in the work directory."""

from __future__ import annotations

import shutil
import signal
import subprocess
from pathlib import Path

from .broker import free_port, wait_for_port

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


class Mosquitto:
    def __init__(self, workdir: Path, extra: str = "", port: int | None = None) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.config_path = workdir / "mosquitto.conf"
        self.log_path = workdir / "mosquitto.log"
        self.config_path.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\nuser root\n"
            "persistence false\nlog_dest stderr\nlog_type all\n" + extra)
        self.proc: subprocess.Popen | None = None

    def start(self) -> Mosquitto:
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.config_path)], stdout=log,
                                     stderr=subprocess.STDOUT)
        log.close()
        wait_for_port(self.port, 10, self.proc)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(10)
