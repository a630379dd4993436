"""What the deploy-kit tests run: `greenfly deploy` and `greenfly probe` as a user would, real
nginx and supervisord started on loopback with their own files in a temp dir, and a
self-signed certificate made with the openssl command line.

Every process here is started by the test and stopped by its PID; nothing on the machine's own
nginx or supervisor configuration is read or touched.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from support.broker import REPO, free_port, wait_for_port

STREAM_MODULE = Path("/usr/lib/nginx/modules/ngx_stream_module.so")


def greenfly(*args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run the `greenfly` command (this checkout) and capture what it prints."""
    result = subprocess.run([sys.executable, "-m", "broker", *args], cwd=REPO,
                            capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"greenfly {' '.join(args)} exited {result.returncode}:\n"
                             f"{result.stdout}\n{result.stderr}")
    return result


def deploy(tool: str, config: Path | str, *options: str) -> str:
    return greenfly("deploy", tool, "-c", str(config), *options).stdout


def need_program(name: str) -> str:
    path = shutil.which(name) or (f"/usr/sbin/{name}" if os.path.exists(f"/usr/sbin/{name}")
                                  else None)
    if path is None:
        pytest.fail(f"{name} is needed: run tests/setup/install-test-deps.sh")
    return path


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, and its key: its own CA for the clients."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=localhost", "-addext",
                    "subjectAltName=IP:127.0.0.1,DNS:localhost",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    return cert, key


@dataclass(frozen=True)
class Layout:
    root: Path
    config: Path


def installed_layout(root: Path) -> Layout:
    """A root laid out as `install.sh --prefix` lays it out, with this checkout's greenfly as
    /opt/greenfly/bin/greenfly and deploy/greenfly.toml as its configuration (its paths under
    the root; its ports as shipped, for `greenfly deploy`: see `any_ports` to run it)."""
    (root / "opt/greenfly/bin").mkdir(parents=True)
    (root / "opt/greenfly/bin/greenfly").symlink_to(Path(sys.executable).parent / "greenfly")
    for directory in ("etc/greenfly", "var/lib/greenfly", "var/log/greenfly"):
        (root / directory).mkdir(parents=True)
    config = root / "etc/greenfly/greenfly.toml"
    config.write_text((REPO / "deploy/greenfly.toml").read_text()
                      .replace('"/var/lib/greenfly"', f'"{root}/var/lib/greenfly"')
                      .replace('"/etc/greenfly/', f'"{root}/etc/greenfly/'))
    return Layout(root, config)


SAMPLE_PORTS = ("1883", "1884", "9001")  # mqtt, mqtt for the proxies (PROXY protocol), ws


def any_ports(config: Path) -> None:
    """Put the sample configuration's listeners (`SAMPLE_PORTS`) on port 0, to run the broker
    beside other tests: its log names the ports it picked. `greenfly deploy` refuses port 0
    (a proxy needs a fixed one), so render first."""
    text = config.read_text()
    for port in SAMPLE_PORTS:
        assert f"port = {port}" in text
        text = text.replace(f"port = {port}", "port = 0")
    config.write_text(text)


class Nginx:
    """nginx with a generated nginx.conf that includes the files under test.

    `http` is included in the http context and `stream` in a stream block (the module loaded
    from Debian's libnginx-mod-stream); logs, pid and temp files stay in `workdir`.
    """

    def __init__(self, workdir: Path, http: str | None = None, stream: str | None = None,
                 ports: tuple[int, ...] = ()) -> None:
        self.workdir = workdir
        self.ports = ports
        self.proc: subprocess.Popen | None = None
        workdir.mkdir(parents=True, exist_ok=True)
        parts = []
        if stream is not None:
            if not STREAM_MODULE.exists():
                pytest.fail("nginx's stream module is needed: install libnginx-mod-stream "
                            "(tests/setup/install-test-deps.sh)")
            parts.append(f"load_module {STREAM_MODULE};\n")
        parts.append(f"worker_processes 1;\nerror_log {workdir}/error.log info;\n"
                     "events { worker_connections 256; }\n")
        if http is not None:
            (workdir / "greenfly.conf").write_text(http)
            temp = "".join(f"    {kind}_temp_path {workdir}/{kind}_temp;\n"
                           for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
            parts.append(f"http {{\n    access_log {workdir}/access.log;\n{temp}"
                         f"    include {workdir}/greenfly.conf;\n}}\n")
        if stream is not None:
            (workdir / "greenfly-stream.conf").write_text(stream)
            parts.append(f"stream {{\n    include {workdir}/greenfly-stream.conf;\n}}\n")
        self.conf = workdir / "nginx.conf"
        self.conf.write_text("".join(parts))

    @property
    def port(self) -> int:
        """The first port it listens on."""
        return self.ports[0]

    def _command(self, *extra: str) -> list[str]:
        return [need_program("nginx"), "-c", str(self.conf), "-p", str(self.workdir), *extra]

    def test_config(self) -> subprocess.CompletedProcess:
        return subprocess.run(self._command("-t", "-g", f"pid {self.workdir}/nginx.pid;"),
                              capture_output=True, text=True, timeout=30)

    def start(self) -> Nginx:
        self.proc = subprocess.Popen(
            self._command("-g", f"daemon off; pid {self.workdir}/nginx.pid;"),
            stdout=subprocess.DEVNULL, stderr=open(self.workdir / "stderr.log", "wb"))  # noqa: SIM115
        try:
            for port in self.ports:
                wait_for_port(port, 10, self.proc)
        except Exception:
            self.stop()
            raise RuntimeError(f"nginx did not start:\n{self.log()}") from None
        return self

    def log(self) -> str:
        return "".join(path.read_text(errors="replace") for path in
                       (self.workdir / "stderr.log", self.workdir / "error.log") if path.exists())

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # the master stops its workers
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def ws_nginx(workdir: Path, broker_config: Path, *, read_timeout: str | None = None) -> Nginx:
    """nginx with `greenfly deploy nginx --listen 127.0.0.1:PORT --no-tls` for this broker;
    `read_timeout` replaces the rendered proxy_read_timeout (a misconfigured proxy)."""
    port = free_port()
    conf = deploy("nginx", broker_config, "--listen", f"127.0.0.1:{port}", "--no-tls")
    if read_timeout is not None:
        lines = [f"        proxy_read_timeout {read_timeout};" if "proxy_read_timeout" in line
                 else line for line in conf.splitlines()]
        conf = "\n".join(lines) + "\n"
    return Nginx(workdir, http=conf, ports=(port,))


def wait_until(predicate: Callable[[], object], timeout: float, what: str,
               interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)
