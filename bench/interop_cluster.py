"""Three greenfly nodes on one redis-server behind nginx's stream module, as one broker for
the interoperability suites (bench/interop.py, broker kind `greenfly-cluster`).

It exists to run the suites as a cluster's user meets it: one address (nginx), `least_conn`
over the nodes, so that the suite's two or three clients at a time land on different nodes and
every session, retained message and will must cross Redis. The nginx file is what
`greenfly deploy nginx-stream --upstream` renders, never written by hand; nginx runs with its
own nginx.conf, pid and logs in the work directory (nothing of the machine's nginx is read).
Each node gets the single-node run's settings (`node_config`) plus a `[cluster]` section with a
key prefix of this run's own.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from procs import REPO, free_port, port_accepts, reap, register, terminate

sys.path.insert(0, str(REPO / "tests"))
from support.redis import RedisServer  # tests/support: the same redis-server the tests run

NGINX = Path("/usr/sbin/nginx")
STREAM_MODULE = Path("/usr/lib/nginx/modules/ngx_stream_module.so")
NODES = ("n1", "n2", "n3")
LEASE_MS = 2000
START_TIMEOUT = 30.0
# "client connected: myclientid from 127.0.0.1:40022 protocol=5 ..." (core/connect_flow.py)
_CONNECTED = re.compile(r"client connected: (.+?) from \S+ protocol=")


class ClusterBroker:
    """redis-server, three nodes and nginx; `port` is nginx's, where the suite connects.

    With `cluster=False`, one plain greenfly behind the same nginx and no Redis (broker kind
    `greenfly-nginx`): what fails there and not on greenfly alone is nginx's doing, not the
    cluster's."""

    def __init__(self, workdir: Path, node_config: Callable[[Path, int], str],
                 cluster: bool = True) -> None:
        self.workdir = workdir
        self.kind = "greenfly-cluster" if cluster else "greenfly-nginx"
        workdir.mkdir(parents=True)
        self.redis = RedisServer(workdir / "redis") if cluster else None
        prefix = f"gfi{uuid.uuid4().hex[:6]}:"
        self.nodes: list[tuple[str, int, Path, list[str]]] = []
        for node_id in NODES if cluster else NODES[:1]:
            home = workdir / node_id
            home.mkdir()
            port = free_port()
            config = home / "greenfly.toml"
            section = ("" if self.redis is None else
                       f'\n[cluster]\nnode_id = "{node_id}"\nredis_url = "{self.redis.url}"\n'
                       f'key_prefix = "{prefix}"\nlease_ms = {LEASE_MS}\n')
            config.write_text(node_config(home, port) + section)
            python = REPO / ".venv" / "bin" / "python"
            command = [str(python if python.exists() else sys.executable), "-m", "broker",
                       "-c", str(config)]
            self.nodes.append((node_id, port, home / "greenfly.log", command))
        self.port = free_port()
        self.log_path = workdir / "nodes.log"  # the nodes' warnings, gathered at stop()
        self.procs: list[subprocess.Popen] = []

    def start(self) -> ClusterBroker:
        if self.redis is not None:
            self.redis.start()
            assert self.redis.proc is not None
            register(self.redis.proc)
        for node_id, port, log_path, command in self.nodes:
            with log_path.open("ab") as log:
                self.procs.append(register(subprocess.Popen(
                    command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL)))
            self._wait(port, self.procs[-1], f"node {node_id}", log_path)
        self._start_nginx()
        return self

    def _wait(self, port: int, proc: subprocess.Popen, what: str, log: Path) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while not port_accepts(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                text = log.read_text(errors="replace") if log.exists() else ""
                raise SystemExit(f"{what} did not start:\n{text[-4000:]}")
            time.sleep(0.02)

    def _start_nginx(self) -> None:
        """`greenfly deploy nginx-stream --no-tls --upstream` for the nodes, included in a
        stream block of an nginx.conf of our own."""
        home = self.workdir / "nginx"
        home.mkdir()
        first_config = self.workdir / self.nodes[0][0] / "greenfly.toml"
        upstream = ",".join(f"127.0.0.1:{port}" for _, port, _, _ in self.nodes)
        rendered = subprocess.run(
            [sys.executable, "-m", "broker", "deploy", "nginx-stream", "-c", str(first_config),
             "--no-tls", "--listen", f"127.0.0.1:{self.port}", "--upstream", upstream],
            cwd=REPO, capture_output=True, text=True, timeout=60)
        if rendered.returncode != 0:
            self.stop()
            raise SystemExit(f"greenfly deploy nginx-stream failed:\n{rendered.stderr}")
        (home / "greenfly-stream.conf").write_text(rendered.stdout)
        conf = home / "nginx.conf"
        conf.write_text(f"load_module {STREAM_MODULE};\nworker_processes 1;\n"
                        f"error_log {home}/error.log info;\n"
                        "events { worker_connections 256; }\n"
                        f"stream {{\n    include {home}/greenfly-stream.conf;\n}}\n")
        with (home / "stderr.log").open("ab") as err:
            self.procs.append(register(subprocess.Popen(
                [str(NGINX), "-c", str(conf), "-p", str(home), "-g",
                 f"daemon off; pid {home}/nginx.pid;"],
                stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL)))
        self._wait(self.port, self.procs[-1], "nginx", home / "error.log")

    def landed(self) -> dict[str, list[str]]:
        """node id -> the client ids its log says connected to it, in order."""
        return {node_id: _CONNECTED.findall(log.read_text(errors="replace"))
                for node_id, _, log, _ in self.nodes if log.exists()}

    def stop(self) -> None:
        for proc in reversed(self.procs):  # nginx first, then the nodes
            terminate(proc)
        self.procs = []
        if self.redis is not None:
            self.redis.close()
            if self.redis.proc is not None:
                reap(self.redis.proc)
        with self.log_path.open("w") as out:
            for node_id, _, log, _ in self.nodes:
                if log.exists():
                    out.writelines(f"{node_id}: {line}\n" for line in
                                   log.read_text(errors="replace").splitlines())
