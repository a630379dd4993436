"""Several brokers behind one real nginx (Debian's), configured by `greenfly deploy nginx` and
`nginx-stream` with `--upstream`.

Three plain greenfly brokers (no cluster: where a client lands is all this shows) behind the
rendered files: six paho clients, over TCP through the stream module and over WebSockets
through the http one, land two on each broker (least_conn), each seen under its own address
(the PROXY header and X-Forwarded-For reach every node). With one broker stopped, new clients
all land on the other two and none sees an error: nginx's passive check passes the refused
connection on to the next node.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from support.broker import BrokerProcess, free_port
from support.clients import PahoClient, unique
from support.deploy import Nginx, deploy

# Every listener on port 0 (the harness names the ports once bound); the address rules of the
# shipped sample, so that the client's own address must cross nginx to be seen.
NODE = """[broker]
data_dir = "{data}"
sys_interval = 0
[limits]
max_keepalive = 60
[[listener]]
bind = "127.0.0.1"
port = 0
proxy_protocol = true
trusted_proxies = ["127.0.0.1"]
[[listener]]
bind = "127.0.0.1"
port = 0
protocol = "websockets"
trusted_proxies = ["127.0.0.1"]
[[listener]]
bind = "127.0.0.1"
port = 0
protocol = "http"
"""
CLIENT_ADDRESS = "127.0.0.2"  # not nginx's 127.0.0.1: seen by a broker only if passed on


@dataclass
class Front:
    brokers: list[BrokerProcess]
    nginx: Nginx
    tcp: int
    ws: int


@pytest.fixture(scope="module")
def front(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Front]:
    brokers: list[BrokerProcess] = []
    nginx = None
    try:
        for name in ("a", "b", "c"):
            work = tmp_path_factory.mktemp(f"node-{name}")
            brokers.append(BrokerProcess(work, config_text=NODE.format(data=work / "data"))
                           .start())
        tcp, ws = free_port(), free_port()
        config = brokers[0].config_path  # the nodes share every setting but their ports
        stream = deploy("nginx-stream", config, "--no-tls", "--listen", f"127.0.0.1:{tcp}",
                        "--upstream", ",".join(f"127.0.0.1:{b.port}" for b in brokers))
        http = deploy("nginx", config, "--no-tls", "--listen", f"127.0.0.1:{ws}",
                      *(f"--upstream=127.0.0.1:{b.port_of('ws')}" for b in brokers))
        nginx = Nginx(tmp_path_factory.mktemp("nginx"), http=http, stream=stream,
                      ports=(tcp, ws)).start()
        yield Front(brokers, nginx, tcp, ws)
    finally:
        if nginx is not None:
            nginx.stop()
        for broker in brokers:
            broker.stop()


def connected(broker: BrokerProcess) -> dict[str, str]:
    """client id -> address, as the broker's own API lists its connected clients."""
    url = f"http://127.0.0.1:{broker.port_of('http')}/api/v1/clients?limit=1000"
    with urllib.request.urlopen(url, timeout=5) as reply:
        items = json.load(reply)["items"]
    return {row["client_id"]: row["address"].rsplit(":", 1)[0].strip("[]") for row in items}


def connect(front: Front, transport: str, count: int) -> list[PahoClient]:
    clients = []
    for _ in range(count):
        port = front.tcp if transport == "tcp" else front.ws
        client = PahoClient(port, client_id=unique(transport), transport=transport,
                            bind_address=CLIENT_ADDRESS)
        assert client.connect() == (False, 0), client.client_id
        clients.append(client)
    return clients


@pytest.mark.parametrize("transport", ["tcp", "websockets"])
def test_clients_spread_over_every_node_and_avoid_a_stopped_one(front, transport):
    first = connect(front, transport, 6)
    later: list[PahoClient] = []
    stopped = front.brokers[2]
    try:
        where = [connected(broker) for broker in front.brokers]
        for clients in where:
            assert {clients.get(c.client_id) for c in first} - {None} <= {CLIENT_ADDRESS}
        landed = [sorted(c.client_id for c in first if c.client_id in clients)
                  for clients in where]
        assert [len(ids) for ids in landed] == [2, 2, 2], landed  # least_conn, one at a time
        assert sorted(i for ids in landed for i in ids) == sorted(c.client_id for c in first)

        stopped.stop()
        later = connect(front, transport, 4)  # each one connects: no error reaches a client
        survivors = [connected(broker) for broker in front.brokers[:2]]
        for client in later:
            assert sum(client.client_id in clients for clients in survivors) == 1, (
                client.client_id, survivors)
        # The first six's own two nodes still hold them; the stopped node's two are gone.
        assert sum(c.client_id in clients for c in first for clients in survivors) == 4
    finally:
        for client in first + later:
            client.disconnect()
        if stopped.proc is not None and stopped.proc.poll() is not None:
            stopped.start()  # the same ports: its config names them since the first start
