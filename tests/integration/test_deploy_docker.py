"""deploy/docker: Docker cannot run on these machines, so the Dockerfile and compose.yaml are
checked statically against the configuration the image uses, and that configuration is run
for real (as `greenfly check`, and as a broker whose /healthz answers the HEALTHCHECK's own
command).

No YAML library is a dependency: `compose_yaml` reads the block subset compose.yaml is
written in (mappings, lists of scalars, quoted scalars, comments) and fails on anything else,
so the file cannot drift into YAML this check does not understand.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from support.broker import REPO, BrokerProcess
from support.deploy import greenfly

DOCKER = REPO / "deploy/docker"
CONFIG = DOCKER / "config/greenfly.toml"
IN_IMAGE = "/greenfly/config/greenfly.toml"


def compose_yaml(text: str) -> dict[str, Any]:
    """The block-style subset of YAML compose.yaml uses, as Python values."""
    lines = []
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].rstrip() if not raw.lstrip().startswith("#") else ""
        if line:
            assert "\t" not in line and not re.search(r"[{}\[\]&*!|>]", line), raw
            lines.append((len(line) - len(line.lstrip()), line.strip()))

    def scalar(text: str) -> Any:
        if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
            return text[1:-1]
        return int(text) if re.fullmatch(r"\d+", text) else text

    def block(i: int, indent: int) -> tuple[Any, int]:
        if lines[i][1].startswith("- "):
            items = []
            while i < len(lines) and lines[i][0] == indent and lines[i][1].startswith("- "):
                items.append(scalar(lines[i][1][2:]))
                i += 1
            return items, i
        mapping: dict[str, Any] = {}
        while i < len(lines) and lines[i][0] == indent:
            key, sep, rest = lines[i][1].partition(":")
            assert sep and key not in mapping, lines[i]
            i += 1
            if rest.strip():
                mapping[key] = scalar(rest.strip())
            elif i < len(lines) and lines[i][0] > indent:
                mapping[key], i = block(i, lines[i][0])
            else:
                mapping[key] = None
        return mapping, i

    parsed, end = block(0, 0)
    assert end == len(lines), f"could not read compose.yaml from {lines[end]}"
    return parsed


def dockerfile() -> dict[str, list[str]]:
    """Instruction -> its arguments, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (DOCKER / "Dockerfile").read_text())
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            word, _, rest = line.strip().partition(" ")
            found.setdefault(word.upper(), []).append(rest.strip())
    return found


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    return tomllib.loads(CONFIG.read_text())


def test_compose_publishes_the_configured_ports_and_mounts_the_image_volumes(config):
    compose = compose_yaml((DOCKER / "compose.yaml").read_text())
    service = compose["services"]["greenfly"]
    ports = {int(item["port"]) for item in config["listener"]}
    assert ports == {1883, 9001, 8080}
    assert {tuple(map(int, p.split(":"))) for p in service["ports"]} == {(p, p) for p in ports}
    exposed = {int(p) for line in dockerfile()["EXPOSE"] for p in line.split()}
    assert exposed == ports
    volumes = json.loads(dockerfile()["VOLUME"][0])
    assert volumes == ["/greenfly/config", "/greenfly/data", "/greenfly/log"]
    targets = [mount.split(":")[1] for mount in service["volumes"]]
    assert sorted(targets) == sorted(volumes)
    assert config["broker"]["data_dir"] == "/greenfly/data"
    for mount in service["volumes"]:
        source = mount.split(":")[0]
        if source.startswith("./"):  # a bind mount: what it hides in the image must be there
            assert (DOCKER / source / Path(IN_IMAGE).name).is_file()
        else:
            assert source in compose["volumes"]
    build = service["build"]
    assert (DOCKER / build["context"] / build["dockerfile"]).resolve() == DOCKER / "Dockerfile"


def test_the_image_runs_as_a_user_on_a_slim_base_with_the_container_config(config):
    instructions = dockerfile()
    assert re.fullmatch(r"python:3\.1[1-9]-slim", instructions["FROM"][0])
    assert instructions["USER"] == ["greenfly"]
    copied = [line for line in instructions["COPY"] if line.endswith(IN_IMAGE)]
    assert copied == [f"deploy/docker/config/greenfly.toml {IN_IMAGE}"]
    assert json.loads(instructions["CMD"][0]) == ["greenfly", "-c", IN_IMAGE]
    for item in config["listener"]:
        assert item["bind"] == "0.0.0.0"  # reachable through the published ports


def test_the_container_config_passes_greenfly_check_and_refuses_anonymous_clients():
    result = greenfly("check", "-c", str(CONFIG))
    assert result.returncode == 0, result.stderr
    assert "0.0.0.0:1883: anonymous clients refused" in result.stdout


def test_the_healthcheck_command_passes_against_the_broker_it_checks(tmp_path, config):
    healthcheck = dockerfile()["HEALTHCHECK"][0]
    command = json.loads(healthcheck.split("CMD", 1)[1])
    assert command[:2] == ["python", "-c"]
    assert "http://127.0.0.1:8080/healthz" in command[2]
    # The image's configuration on loopback, port 0 and a temp data_dir.
    text = (CONFIG.read_text().replace('"/greenfly/data"', f'"{tmp_path}/data"')
            .replace('bind = "0.0.0.0"', 'bind = "127.0.0.1"'))
    for port in (1883, 9001, 8080):
        text = text.replace(f"port = {port}", "port = 0")
    broker = BrokerProcess(tmp_path, config_text=text).start()
    try:
        probe = command[2].replace("127.0.0.1:8080", f"127.0.0.1:{broker.port_of('http')}")
        assert subprocess.run([sys.executable, "-c", probe], timeout=30).returncode == 0
        wrong = probe.replace("/healthz", "/nowhere")
        assert subprocess.run([sys.executable, "-c", wrong], capture_output=True,
                              timeout=30).returncode != 0  # the check can fail
    finally:
        broker.stop()
