"""deploy/cluster/, the three-node example: its nginx files are exactly `greenfly deploy ...
--upstream` for its nodes and pass `nginx -t`; its template unit is the single-node unit with
the node's name in it and passes `systemd-analyze verify`; Debian's redis-server runs with its
Redis settings in effect; the three node files differ only where a node must.

The node files are read whole, their Redis password file moved to a temporary one (the loader
reads it, and /etc/greenfly/redis.secret exists only where the kit is installed).
"""

from __future__ import annotations

import difflib
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from support.broker import REPO, free_port, wait_for_port
from support.cluster_kit import template_unit
from support.deploy import Nginx, deploy, need_program, self_signed

from broker.config.loading import load_text

KIT = REPO / "deploy/cluster"
NODES = ("n1", "n2", "n3")
PORTS = {"n1": (1884, 9002, 8081), "n2": (1885, 9003, 8082), "n3": (1886, 9004, 8083)}
NGINX = {  # shipped file -> (tool, listener protocol whose port each node gives)
    "nginx/greenfly.conf": ("nginx", "websockets"),
    "nginx/greenfly-stream.conf": ("nginx-stream", "mqtt"),
}


def node(name: str) -> dict:
    return tomllib.loads((KIT / f"{name}.toml").read_text())


def upstreams(protocol: str) -> str:
    return ",".join(f"127.0.0.1:{item['port']}" for name in NODES
                    for item in node(name)["listener"] if item["protocol"] == protocol)


@pytest.mark.parametrize("shipped", list(NGINX))
def test_nginx_files_are_greenfly_deploy_upstream_output_for_the_nodes(tmp_path, shipped):
    tool, protocol = NGINX[shipped]
    config = with_secret_in(tmp_path, (KIT / "n1.toml").read_text())
    rendered = deploy(tool, config, "--upstream", upstreams(protocol))
    text = (KIT / shipped).read_text()
    assert rendered == text, (
        f"deploy/cluster/{shipped} is not `greenfly deploy {tool} -c deploy/cluster/n1.toml "
        f"--upstream {upstreams(protocol)}`:\n"
        + "".join(difflib.unified_diff(text.splitlines(True), rendered.splitlines(True))))


def test_shipped_cluster_nginx_files_pass_nginx_t(tmp_path):
    cert, key = self_signed(tmp_path / "certs")

    def localize(name: str) -> str:  # certbot's files do not exist here
        return ((KIT / name).read_text()
                .replace("/etc/letsencrypt/live/mqtt.example.com/fullchain.pem", str(cert))
                .replace("/etc/letsencrypt/live/mqtt.example.com/privkey.pem", str(key)))

    nginx = Nginx(tmp_path / "nginx", http=localize("nginx/greenfly.conf"),
                  stream=localize("nginx/greenfly-stream.conf"))
    result = nginx.test_config()
    assert result.returncode == 0, result.stderr
    for shipped in NGINX:
        assert "least_conn;" in (KIT / shipped).read_text()


def test_the_nodes_differ_only_in_name_ports_and_data_dir():
    first = (KIT / "n1.toml").read_text().splitlines()
    for name in NODES:
        config = node(name)
        tcp, ws, http = PORTS[name]
        assert config["cluster"] == {
            "node_id": name, "redis_url": "redis://127.0.0.1:6379/0",
            "redis_password_file": "/etc/greenfly/redis.secret", "key_prefix": "gf:",
            "lease_ms": 10000}
        assert config["broker"]["data_dir"] == f"/var/lib/greenfly/{name}"
        assert [(x["bind"], x["port"], x["protocol"]) for x in config["listener"]] == [
            ("127.0.0.1", tcp, "mqtt"), ("127.0.0.1", ws, "websockets"),
            ("127.0.0.1", http, "http")]
        changed = [line for line in difflib.ndiff(first, (KIT / f"{name}.toml").read_text()
                                                  .splitlines()) if line[:2] == "+ "]
        assert all(name in line or line.startswith("+ port = ") for line in changed), changed


def with_secret_in(tmp_path, text: str) -> Path:
    """A node file as shipped, its Redis password file moved to `tmp_path` (the loader reads
    it: /etc/greenfly/redis.secret exists only on an installed machine)."""
    secret = tmp_path / "redis.secret"
    secret.write_text("test-secret\n")
    config = tmp_path / "node.toml"
    config.write_text(text.replace("/etc/greenfly/redis.secret", str(secret)))
    return config


@pytest.mark.parametrize("name", NODES)
def test_the_node_files_load_as_cluster_nodes(tmp_path, name):
    path = with_secret_in(tmp_path, (KIT / f"{name}.toml").read_text())
    config = load_text(path.read_text(), f"{name}.toml")
    assert config.limits.max_keepalive == 300 and config.broker.allow_anonymous is False
    assert config.cluster is not None and config.cluster.node_id == name
    assert config.cluster.redis_url == "redis://127.0.0.1:6379/0"


def test_the_template_unit_is_the_single_node_unit_per_instance(tmp_path):
    shipped = (KIT / "greenfly@.service").read_text()
    assert shipped == template_unit(deploy("systemd", "deploy/greenfly.toml"))
    # systemd-analyze resolves %i for an instance, and needs the binary to exist.
    binary = tmp_path / "opt/greenfly/bin/greenfly"
    binary.parent.mkdir(parents=True)
    binary.symlink_to(Path(sys.executable).parent / "greenfly")
    unit = tmp_path / "greenfly@n1.service"
    unit.write_text(shipped.replace("/opt/greenfly/", f"{tmp_path}/opt/greenfly/"))
    result = subprocess.run([need_program("systemd-analyze"), "verify", str(unit)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "greenfly@" not in result.stdout + result.stderr, (
        result.stderr)


def test_redis_runs_with_the_settings_the_kit_needs(tmp_path):
    secret = tmp_path / "greenfly-secret.conf"
    secret.write_text("requirepass kit-test-secret\n")
    settings = tmp_path / "redis-greenfly.conf"
    settings.write_text((KIT / "redis-greenfly.conf").read_text()
                        .replace("/etc/redis/greenfly-secret.conf", str(secret)))
    port = free_port()
    main = tmp_path / "redis.conf"  # Debian's redis.conf with the kit's file last, as told
    main.write_text(f"include {settings}\nport {port}\ndir {tmp_path}\ndaemonize no\n")
    proc = subprocess.Popen([need_program("redis-server"), str(main)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, 10, proc)

        def cli(*args: str, password: str | None = "kit-test-secret") -> str:
            auth = ("-a", password, "--no-auth-warning") if password else ()
            return subprocess.run([need_program("redis-cli"), "-p", str(port), *auth, *args],
                                  capture_output=True, text=True, timeout=10).stdout

        assert "NOAUTH" in cli("PING", password=None)
        for key, value in (("appendonly", "yes"), ("appendfsync", "always"),
                           ("no-appendfsync-on-rewrite", "no"),
                           ("maxmemory-policy", "noeviction"), ("bind", "127.0.0.1 -::1")):
            assert cli("CONFIG", "GET", key).split("\n")[1] == value, key
    finally:
        proc.terminate()
        proc.wait(10)
