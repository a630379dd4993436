"""paho-mqtt over WebSockets, and traffic crossing between the TCP and WebSocket listeners.

Both listeners run in one broker process; what one side publishes the other receives with
the same bytes, whatever they are.
"""

from __future__ import annotations

import pytest
from support.broker import BrokerProcess
from support.clients import PahoClient, unique

BINARY = b"\x00\x01\xff\xfe\xc3\x28 not UTF-8 \xed\xa0\x80\x00"  # NUL, bad UTF-8, a surrogate
MEGABYTE = bytes(range(256)) * 4096  # 1 MiB, every byte value


@pytest.fixture(scope="module")
def wsbroker(tmp_path_factory: pytest.TempPathFactory):
    proc = BrokerProcess(tmp_path_factory.mktemp("ws-paho"), websockets=True).start()
    yield proc
    proc.stop()


def connected(port: int, **kwargs) -> PahoClient:
    client = PahoClient(port, **kwargs)
    client.connect()
    return client


def test_printer_gets_three_qos1_messages_sent_while_away_and_session_present(wsbroker):
    topic = "printers/printer-A/jobs"
    printer = PahoClient(wsbroker.ws_port, client_id="printer-A", clean_session=False,
                         keepalive=30, transport="websockets")
    assert printer.connect() == (False, 0)
    assert printer.subscribe(topic, 1) == [1]
    printer.publish(topic, b"self test", qos=1)
    assert printer.expect(1)[0].payload == b"self test"
    printer.disconnect()

    office = connected(wsbroker.port)
    for i in range(3):
        office.publish(topic, f"job {i}".encode(), qos=1)
    office.disconnect()

    again = PahoClient(wsbroker.ws_port, client_id="printer-A", clean_session=False,
                       keepalive=30, transport="websockets")
    assert again.connect() == (True, 0)
    messages = again.expect(3)
    assert [m.payload for m in messages] == [b"job 0", b"job 1", b"job 2"]
    assert [m.qos for m in messages] == [1, 1, 1]
    again.disconnect()


@pytest.mark.parametrize("qos", [0, 1, 2])
@pytest.mark.parametrize("direction", ["tcp-to-ws", "ws-to-tcp"])
def test_binary_payload_crosses_transports_byte_for_byte(wsbroker, direction, qos):
    topic = unique(f"mixed/{direction}")
    ws = connected(wsbroker.ws_port, transport="websockets")
    tcp = connected(wsbroker.port)
    publisher, subscriber = (tcp, ws) if direction == "tcp-to-ws" else (ws, tcp)
    subscriber.subscribe(topic, qos)
    publisher.publish(topic, BINARY, qos=qos)
    [message] = subscriber.expect(1)
    assert message.payload == BINARY and message.qos == qos
    ws.disconnect()
    tcp.disconnect()


@pytest.mark.parametrize("direction", ["tcp-to-ws", "ws-to-tcp", "ws-to-ws"])
def test_one_megabyte_payload_crosses_intact(wsbroker, direction):
    topic = unique(f"big/{direction}")
    ws = connected(wsbroker.ws_port, transport="websockets")
    other = connected(wsbroker.ws_port if direction == "ws-to-ws" else wsbroker.port,
                      transport="websockets" if direction == "ws-to-ws" else "tcp")
    publisher, subscriber = (other, ws) if direction == "tcp-to-ws" else (ws, other)
    subscriber.subscribe(topic, 1)
    publisher.publish(topic, MEGABYTE, qos=1, timeout=20)
    [message] = subscriber.expect(1, timeout=20)
    assert len(message.payload) == len(MEGABYTE) and message.payload == MEGABYTE
    ws.disconnect()
    other.disconnect()


def test_will_of_a_dropped_websocket_client_reaches_a_tcp_subscriber(wsbroker):
    topic = unique("mixed/will")
    watcher = connected(wsbroker.port)
    watcher.subscribe(topic, 1)
    doomed = connected(wsbroker.ws_port, transport="websockets",
                       will=(topic, b"\x00lost\xff", 1, False))
    doomed.drop()
    [message] = watcher.expect(1)
    assert message.payload == b"\x00lost\xff"
    watcher.disconnect()


def test_websocket_subscriber_that_stops_reading_gets_everything_in_order(wsbroker):
    # 4 MiB of QoS 0 to a WebSocket subscriber whose client stopped reading: the direct
    # flush writes part of a frame, the transport keeps the rest, and the writer greenlet
    # finishes that frame before any other once the client reads again.
    topic = f"{unique('ws-slow')}/t"
    sub = connected(wsbroker.ws_port, transport="websockets")
    sub.subscribe(topic, 0)
    sub.client.loop_stop()  # the client stops reading its socket
    pub = connected(wsbroker.port)
    payloads = [b"%06d" % i + b"." * 4090 for i in range(1024)]
    for payload in payloads:
        pub.client.publish(topic, payload, 0)
    pub.publish(topic, b"end", qos=1)  # acknowledged: the publisher was never held back
    sub.client.loop_start()
    got = [m.payload for m in sub.expect(len(payloads) + 1, timeout=30)]
    assert got == [*payloads, b"end"]
    pub.disconnect()
    sub.disconnect()
