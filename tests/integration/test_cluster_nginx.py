"""The dashboard's case on a cluster: MQTT.js over WebSockets through Debian's nginx, rendered
by `greenfly deploy nginx --upstream` for three nodes on one redis-server. The node that holds
the browser's persistent session is killed with -9; MQTT.js connects again through the same
URL, nginx sends it to a survivor, and it finds its session with every message published
meanwhile."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from support.broker import free_port
from support.clients import PahoClient, unique
from support.cluster import Cluster
from support.deploy import Nginx, deploy
from support.redis import RedisServer

pytestmark = pytest.mark.slow


def test_mqttjs_session_follows_the_browser_when_its_node_dies(tmp_path: Path, mqttjs) -> None:
    redis = RedisServer(tmp_path / "redis")
    redis.start()
    nodes = Cluster(tmp_path, redis, 3, lease_ms=1500, websockets=True).start()
    port = free_port()
    http = deploy("nginx", nodes[0].config_path, "--no-tls", "--listen", f"127.0.0.1:{port}",
                  *(f"--upstream=127.0.0.1:{node.ws_port}" for node in nodes.nodes))
    nginx = Nginx(tmp_path / "nginx", http=http, ports=(port,)).start()
    try:
        url = f"ws://127.0.0.1:{port}/mqtt"
        client_id, topic = unique("dashboard"), unique("cluster/js")
        options = {"clientId": client_id, "clean": False, "keepalive": 30}
        first = mqttjs()
        assert first.call("connect", url=url, options=options)["returnCode"] == 0
        assert first.subscribe(topic, qos=1) == [1]
        holder = next(node for node in nodes.nodes
                      if f"client connected: {client_id}" in node.log_text())
        survivor = next(node for node in nodes.nodes if node is not holder)
        publisher = PahoClient(survivor.port)
        publisher.connect()
        publisher.publish(topic, b"before", qos=1)
        assert first.expect(1)[0]["payload"] == b"before"
        holder.kill9()
        first.next_event("close")
        payloads = [b"while-away-%d" % i for i in range(20)]
        for payload in payloads:
            publisher.publish(topic, payload, qos=1)
        again = mqttjs()
        connack = again.call("connect", url=url, options=options)
        assert connack["sessionPresent"] is True
        messages = again.expect(len(payloads), timeout=10)
        # The PUBACK for "before" may have died with the node before its record was written:
        # then it comes again, marked DUP, as QoS 1 allows (and as one node would do).
        if messages[0]["payload"] == b"before":
            assert messages[0]["dup"] is True
            messages = messages[1:] + again.expect(1, timeout=10)
        assert [m["payload"] for m in messages] == payloads
        assert {m["qos"] for m in messages} == {1}
        landed = [node for node in nodes.nodes
                  if node is not holder and f"client connected: {client_id}" in node.log_text()]
        assert len(landed) == 1
        again.end()
        publisher.disconnect()
    finally:
        nginx.stop()
        nodes.stop()
        redis.stop()


def test_a_disconnect_reason_reaches_the_client_through_nginx_stream(tmp_path: Path,
                                                                     broker_factory) -> None:
    """An MQTT 5 client that sends more QoS 2 PUBLISHes than the receive maximum, through
    the rendered nginx-stream file, reads DISCONNECT 0x93, not a reset: the broker half-closes
    and reads on, and nginx passes the half close on (`proxy_half_close on`)."""
    from support.clients import RawClient

    from broker.codec import Connect, Disconnect, PingReq, Publish, encode
    broker = broker_factory()
    port = free_port()
    stream = deploy("nginx-stream", broker.config_path, "--no-tls", "--listen",
                    f"127.0.0.1:{port}")
    nginx = Nginx(tmp_path / "nginx", stream=stream, ports=(port,)).start()
    try:
        client = RawClient(port, protocol_level=5)
        client.send_packet(Connect(unique("flood"), 5, True, 60), 5)
        connack = client.recv_packet()
        maximum = connack.properties.get("receive_maximum", 65535)
        assert maximum < 1000, maximum  # the broker's own, small enough to exceed here
        client.send(b"".join(encode(Publish("flood/x", b"m", 2, packet_id=i + 1), 5)
                             for i in range(maximum + 1)))
        # Like the Paho suite's client, it goes on writing a moment before it reads: a
        # proxy that cut both ways at the broker's close would answer these with a reset.
        for _ in range(30):
            client.send(encode(PingReq(), 5))
            time.sleep(0.01)
        packets = []
        for _ in range(maximum + 40):
            packet = client.recv_packet(timeout=5)
            packets.append(packet)
            if isinstance(packet, Disconnect):
                break
        assert isinstance(packets[-1], Disconnect) and packets[-1].reason_code == 0x93
        client.close()
    finally:
        nginx.stop()
