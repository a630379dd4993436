"""MQTT over WebSocket, byte by byte: the handshake answers, frames split anyhow, close codes.

A raw socket plays the client with a small frame codec of its own (not wsproto), so these
tests check the wire, not the library against itself.
"""

from __future__ import annotations

import base64
import os
import re
import socket
import struct
import time

import pytest
from support.broker import BrokerProcess
from support.clients import TIMEOUT, PahoClient, expect_marker, unique

from broker.codec import (
    ConnAck,
    Connect,
    Disconnect,
    FrameDecoder,
    PingReq,
    PingResp,
    Publish,
    SubAck,
    SubOptions,
    Subscribe,
    Will,
    encode,
)

CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


class RawWebSocket:
    """A WebSocket client on a plain socket: exact handshake bytes, exact frames."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.buf = b""
        self.mqtt = FrameDecoder(server_side=False)

    # -- HTTP --------------------------------------------------------------------------------

    def request(self, path: str = "/mqtt", protocols: str | None = "mqtt",
                extra: str = "", upgrade: bool = True) -> tuple[int, dict[str, str]]:
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1"]
        if upgrade:
            lines += ["Upgrade: websocket", "Connection: Upgrade",
                      f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
        if protocols is not None:
            lines.append(f"Sec-WebSocket-Protocol: {protocols}")
        self.sock.sendall(("\r\n".join(lines) + "\r\n" + extra + "\r\n").encode())
        return self.read_response()

    def read_response(self) -> tuple[int, dict[str, str]]:
        while b"\r\n\r\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError(f"closed before a full HTTP response: {self.buf!r}")
            self.buf += data
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return int(status_line.split()[1]), headers

    def read_to_eof(self, timeout: float = TIMEOUT) -> bytes:
        self.sock.settimeout(timeout)
        out, self.buf = self.buf, b""
        while data := self.sock.recv(65536):
            out += data
        return out

    # -- frames ------------------------------------------------------------------------------

    def send_frame(self, opcode: int, payload: bytes, fin: bool = True) -> None:
        self.sock.sendall(self.frame(opcode, payload, fin))

    @staticmethod
    def frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
        """A masked client frame, with a fresh random mask."""
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            header = struct.pack("!BB", (0x80 if fin else 0) | opcode, 0x80 | n)
        elif n < 65536:
            header = struct.pack("!BBH", (0x80 if fin else 0) | opcode, 0x80 | 126, n)
        else:
            header = struct.pack("!BBQ", (0x80 if fin else 0) | opcode, 0x80 | 127, n)
        return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))

    def send_mqtt(self, *packets: object) -> None:
        self.send_frame(BINARY, b"".join(encode(p, 4) for p in packets))

    def _need(self, n: int) -> bytes:
        while len(self.buf) < n:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("broker closed the connection")
            self.buf += data
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv_frame(self, timeout: float = TIMEOUT) -> tuple[bool, int, bytes]:
        self.sock.settimeout(timeout)
        b0, b1 = self._need(2)
        assert not b1 & 0x80, "a server frame must not be masked"
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", self._need(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", self._need(8))
        return bool(b0 & 0x80), b0 & 0x0F, self._need(n)

    def recv_packet(self, timeout: float = TIMEOUT) -> object:
        deadline = time.monotonic() + timeout
        while (packet := self.mqtt.next_packet()) is None:
            _fin, opcode, payload = self.recv_frame(max(0.01, deadline - time.monotonic()))
            assert opcode in (BINARY, CONT), f"expected a binary frame, got opcode {opcode}"
            self.mqtt.feed(payload)
        return packet

    def expect_close(self, timeout: float = TIMEOUT) -> int:
        """Read frames up to the close frame; its code. Then the broker ends the TCP stream."""
        deadline = time.monotonic() + timeout
        while True:
            _fin, opcode, payload = self.recv_frame(max(0.01, deadline - time.monotonic()))
            if opcode == CLOSE:
                self.send_frame(CLOSE, payload[:2])
                assert self.read_to_eof(timeout) == b""
                return struct.unpack("!H", payload[:2])[0]

    def connect_mqtt(self, client_id: str | None = None, **kwargs: object) -> ConnAck:
        status, _headers = self.request()
        assert status == 101
        self.send_mqtt(Connect(client_id or unique("raw-ws"), **kwargs))
        connack = self.recv_packet()
        assert isinstance(connack, ConnAck) and connack.reason_code == 0
        return connack

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def wsbroker(tmp_path_factory: pytest.TempPathFactory):
    proc = BrokerProcess(tmp_path_factory.mktemp("ws-raw"), websockets=True).start()
    yield proc
    proc.stop()


def ws_listener(body: str = "") -> str:
    return f'[[listener]]\nbind = "127.0.0.1"\nport = 0\nprotocol = "websockets"\n{body}\n'


def start_with_ws(broker_factory, listener_body: str = "", extra: str = "") -> tuple:
    proc = broker_factory(ws_listener(listener_body) + extra)
    return proc, proc.port_of("ws")


# -- the opening handshake ---------------------------------------------------------------------

def test_wrong_path_gets_404_before_any_upgrade(wsbroker):
    ws = RawWebSocket(wsbroker.ws_port)
    status, headers = ws.request(path="/not-mqtt")
    assert status == 404
    assert "upgrade" not in headers and "sec-websocket-accept" not in headers
    assert b"greenfly" in ws.read_to_eof()


def test_plain_http_request_without_upgrade_gets_400_naming_greenfly(wsbroker):
    ws = RawWebSocket(wsbroker.ws_port)
    status, headers = ws.request(upgrade=False, protocols=None)
    assert status == 400
    body = ws.read_to_eof()
    assert body.startswith(b"greenfly") and body.count(b"\n") == 1
    assert int(headers["content-length"]) == len(body)


def test_malformed_request_line_gets_400_and_close(wsbroker):
    ws = RawWebSocket(wsbroker.ws_port)
    ws.sock.sendall(b"this is not http\r\n\r\n")
    assert ws.read_response()[0] == 400
    ws.read_to_eof()


def test_oversized_handshake_gets_400_and_close(wsbroker):
    ws = RawWebSocket(wsbroker.ws_port)
    status, _ = ws.request(extra="X-Padding: " + "a" * 40_000 + "\r\n")
    assert status == 400
    ws.read_to_eof()


def test_wrong_websocket_version_gets_426_naming_13(wsbroker):
    ws = RawWebSocket(wsbroker.ws_port)
    key = base64.b64encode(os.urandom(16)).decode()
    ws.sock.sendall((f"GET /mqtt HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                     f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                     "Sec-WebSocket-Version: 8\r\n\r\n").encode())
    status, headers = ws.read_response()
    assert status == 426 and headers["sec-websocket-version"] == "13"


@pytest.mark.parametrize(("offered", "answer"), [
    ("mqttv3.1", "mqttv3.1"),
    ("mqtt", "mqtt"),
    ("mqttv3.1, mqtt", "mqtt"),
    ("chat, MQTT", "MQTT"),
])
def test_subprotocol_answer_is_the_first_mqtt_name_the_client_offered(wsbroker, offered, answer):
    ws = RawWebSocket(wsbroker.ws_port)
    status, headers = ws.request(protocols=offered)
    assert status == 101
    assert headers["sec-websocket-protocol"] == answer
    ws.close()


@pytest.mark.parametrize("offered", [None, "chat"])
def test_client_offering_no_mqtt_subprotocol_is_served_without_the_header(wsbroker, offered):
    ws = RawWebSocket(wsbroker.ws_port)
    status, headers = ws.request(protocols=offered)
    assert status == 101 and "sec-websocket-protocol" not in headers
    ws.send_mqtt(Connect(unique("noproto")))
    assert isinstance(ws.recv_packet(), ConnAck)
    ws.close()


def test_handshake_that_never_completes_is_closed_within_connect_timeout(broker_factory):
    proc, port = start_with_ws(broker_factory, extra="[broker]\nconnect_timeout = 0.5\n")
    ws = RawWebSocket(port)
    ws.sock.sendall(b"GET /mqtt HTTP/1.1\r\nHost: x\r\n")  # ... and never the blank line
    started = time.monotonic()
    assert ws.read_to_eof(timeout=20) == b""
    elapsed = time.monotonic() - started
    assert 0.3 < elapsed < 5, elapsed  # its 0.5 s, well before the default 10 s
    proc.wait_for_log(r"handshake not completed within 0.5s")


def test_a_list_of_paths_upgrades_on_each_and_only_those(broker_factory):
    _proc, port = start_with_ws(broker_factory, 'path = ["/mqtt", "/ws/v1"]')
    for path, expected in (("/mqtt", 101), ("/ws/v1?token=x", 101), ("/ws", 404)):
        ws = RawWebSocket(port)
        assert ws.request(path=path)[0] == expected, path
        ws.close()


def test_bytes_sent_with_the_handshake_are_not_lost(wsbroker):
    ws = RawWebSocket(wsbroker.ws_port)
    key = base64.b64encode(os.urandom(16)).decode()
    connect = encode(Connect(unique("eager")), 4)
    mask = os.urandom(4)
    frame = bytes((0x82, 0x80 | len(connect))) + mask + bytes(
        b ^ mask[i % 4] for i, b in enumerate(connect))
    ws.sock.sendall((f"GET /mqtt HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                     f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n").encode() + frame)
    assert ws.read_response()[0] == 101
    assert isinstance(ws.recv_packet(), ConnAck)


# -- frames --------------------------------------------------------------------------------------

def test_one_packet_split_across_three_frames_with_continuations(wsbroker):
    ws = RawWebSocket(wsbroker.ws_port)
    assert ws.request()[0] == 101
    data = encode(Connect(unique("split"), keepalive=30), 4)
    a, b = len(data) // 3, 2 * len(data) // 3
    ws.send_frame(BINARY, data[:a], fin=False)
    ws.send_frame(CONT, data[a:b], fin=False)
    ws.send_frame(CONT, data[b:], fin=True)
    assert isinstance(ws.recv_packet(), ConnAck)


def test_one_packet_split_across_three_messages(wsbroker):
    ws = RawWebSocket(wsbroker.ws_port)
    ws.connect_mqtt()
    data = encode(PingReq(), 4) + encode(PingReq(), 4)  # 4 bytes: 1 + 2 + 1
    for part in (data[:1], data[1:3], data[3:]):
        ws.send_frame(BINARY, part)
    assert isinstance(ws.recv_packet(), PingResp)
    assert isinstance(ws.recv_packet(), PingResp)


def test_a_hundred_packets_in_one_frame_all_arrive_in_order(wsbroker):
    ws = RawWebSocket(wsbroker.ws_port)
    assert ws.request()[0] == 101
    topic = unique("hundred")
    packets = [Connect(unique("batch")), Subscribe(1, ((topic, SubOptions(0)),))]
    packets += [Publish(topic, f"m{i}".encode(), 0) for i in range(100)]
    ws.send_mqtt(*packets)
    assert isinstance(ws.recv_packet(), ConnAck)
    assert isinstance(ws.recv_packet(), SubAck)
    payloads = [ws.recv_packet().payload for _ in range(100)]
    assert payloads == [f"m{i}".encode() for i in range(100)]


def test_control_and_fragmented_frames_between_plain_ones_keep_the_byte_order(wsbroker):
    ws = RawWebSocket(wsbroker.ws_port)
    assert ws.request()[0] == 101
    subscribe = encode(Subscribe(7, ((unique("order"), SubOptions(1)),)), 4)
    ws.sock.sendall(b"".join(RawWebSocket.frame(*spec) for spec in (
        (BINARY, encode(Connect(unique("order")), 4), True),
        (PING, b"between", True),
        (BINARY, subscribe[:3], False),
        (PING, b"inside a message", True),
        (CONT, subscribe[3:], True),
        (BINARY, encode(PingReq(), 4), True))))
    pongs, packets = [], []
    while len(pongs) < 2 or len(packets) < 3:  # pongs may overtake queued MQTT replies
        _fin, opcode, payload = ws.recv_frame()
        if opcode == PONG:
            pongs.append(payload)
        else:
            ws.mqtt.feed(payload)
            while (packet := ws.mqtt.next_packet()) is not None:
                packets.append(type(packet))
    assert pongs == [b"between", b"inside a message"]
    assert packets == [ConnAck, SubAck, PingResp]


def test_new_binary_frame_inside_a_fragmented_message_gets_close_1002(wsbroker):
    ws = RawWebSocket(wsbroker.ws_port)
    ws.connect_mqtt()
    ws.send_frame(BINARY, b"\xc0", fin=False)
    ws.send_frame(BINARY, b"\x00")
    assert ws.expect_close() == 1002


def test_ping_frame_is_answered_with_pong_carrying_its_payload(wsbroker):
    ws = RawWebSocket(wsbroker.ws_port)
    ws.connect_mqtt()
    ws.send_frame(PING, b"are you there")
    assert ws.recv_frame() == (True, PONG, b"are you there")


def test_text_frame_is_closed_with_1003(wsbroker):
    ws = RawWebSocket(wsbroker.ws_port)
    ws.connect_mqtt()
    ws.send_frame(TEXT, b"hello")
    assert ws.expect_close() == 1003


def test_message_over_max_packet_size_is_closed_with_1009(broker_factory):
    _proc, port = start_with_ws(broker_factory, extra="[limits]\nmax_packet_size = 1000\n")
    ws = RawWebSocket(port)
    ws.connect_mqtt()
    ws.send_frame(BINARY, b"\x30" + b"\x00" * 1500)
    assert ws.expect_close() == 1009


# -- close codes for the MQTT reasons ----------------------------------------------------------

def test_client_disconnect_gets_close_1000(wsbroker):
    ws = RawWebSocket(wsbroker.ws_port)
    ws.connect_mqtt()
    ws.send_mqtt(Disconnect())
    assert ws.expect_close() == 1000


def test_disconnect_and_close_frame_in_one_write_publish_no_will(wsbroker):
    topic = unique("no-will")
    watcher = PahoClient(wsbroker.port)
    watcher.connect()
    watcher.subscribe(topic, 1)
    ws = RawWebSocket(wsbroker.ws_port)
    ws.connect_mqtt(will=Will(topic, b"should not be sent", 1, False))
    wsbroker.mark_log()
    ws.sock.sendall(RawWebSocket.frame(BINARY, encode(Disconnect(), 4))
                    + RawWebSocket.frame(CLOSE, struct.pack("!H", 1000)))
    _fin, opcode, payload = ws.recv_frame()
    assert (opcode, payload[:2]) == (CLOSE, struct.pack("!H", 1000))
    wsbroker.wait_for_log(r"reason=client DISCONNECT")  # logged after the will, if any
    expect_marker(watcher, watcher, topic)
    watcher.disconnect()


def test_mqtt_protocol_error_gets_close_1002_and_others_are_still_served(wsbroker):
    ws = RawWebSocket(wsbroker.ws_port)
    ws.connect_mqtt()
    ws.send_mqtt(Connect(unique("second")))  # a second CONNECT [MQTT-3.1.0-2]
    assert ws.expect_close() == 1002
    RawWebSocket(wsbroker.ws_port).connect_mqtt()


def test_masked_frame_rules_broken_gets_close_1002(wsbroker):
    ws = RawWebSocket(wsbroker.ws_port)
    ws.connect_mqtt()
    ws.sock.sendall(bytes((0x82, 0x02)) + b"\xc0\x00")  # an unmasked client frame
    assert ws.expect_close() == 1002


def test_server_shutdown_gets_close_1001(broker_factory):
    proc, port = start_with_ws(broker_factory)
    ws = RawWebSocket(port)
    ws.connect_mqtt()
    proc.stop()
    assert ws.expect_close() == 1001


def test_takeover_closes_the_old_websocket_and_the_session_carries_over(wsbroker):
    client_id = unique("takeover")
    old = RawWebSocket(wsbroker.ws_port)
    old.connect_mqtt(client_id, clean_start=False)
    new = RawWebSocket(wsbroker.ws_port)
    connack = new.connect_mqtt(client_id, clean_start=False)
    assert connack.session_present
    assert old.expect_close() == 1000


def test_keepalive_timeout_over_websocket_publishes_the_will(wsbroker):
    topic = unique("will")
    watcher = PahoClient(wsbroker.port)
    watcher.connect()
    watcher.subscribe(topic, 1)
    ws = RawWebSocket(wsbroker.ws_port)
    ws.connect_mqtt(keepalive=1, will=Will(topic, b"gone quiet", 1, False))
    started = time.monotonic()
    [message] = watcher.expect(1, timeout=20)
    assert message.payload == b"gone quiet"
    assert 1.4 < time.monotonic() - started < 5  # 1.5 x keepalive 1 s, give or take the load
    watcher.disconnect()


# -- behind a proxy ----------------------------------------------------------------------------

@pytest.mark.parametrize(("forwarded", "client"), [
    ("203.0.113.9", "203.0.113.9"),
    # The right-most entry that is not a trusted proxy: what the client wrote itself
    # (203.0.113.9 here) stands left of it and is never believed.
    ("203.0.113.9, 10.0.0.1", "10.0.0.1"),
    ("203.0.113.9, 127.0.0.1", "203.0.113.9"),  # a trusted hop is walked past
])
def test_forwarded_client_address_from_a_trusted_proxy_is_logged(wsbroker, forwarded, client):
    client_id = unique("proxied")
    wsbroker.mark_log()
    ws = RawWebSocket(wsbroker.ws_port)
    status, _ = ws.request(extra=f"X-Forwarded-For: {forwarded}\r\n")
    assert status == 101
    ws.send_mqtt(Connect(client_id))
    assert isinstance(ws.recv_packet(), ConnAck)
    # Refused, being anonymous and remote (see below), and logged with the address.
    wsbroker.wait_for_log(rf"connection refused: {client_id} from {re.escape(client)}: ")


def test_x_real_ip_is_used_when_there_is_no_x_forwarded_for(wsbroker):
    client_id = unique("realip")
    ws = RawWebSocket(wsbroker.ws_port)
    assert ws.request(extra="X-Real-IP: 2001:db8::7\r\n")[0] == 101
    ws.send_mqtt(Connect(client_id))
    assert isinstance(ws.recv_packet(), ConnAck)
    wsbroker.wait_for_log(rf"connection refused: {client_id} from 2001:db8::7: ")


@pytest.mark.parametrize(("forwarded", "refused"), [
    ("203.0.113.9", 0x87),  # on the wire, 3.1.1's return code 5 (MQTT 5: test_proxy_protocol)
    ("2001:db8::7, 127.0.0.1", 0x87),
    ("127.0.0.1", 0),  # a client on this machine, through the proxy: loopback
    ("::ffff:127.0.0.5", 0),
])
def test_anonymous_through_a_proxy_is_judged_by_the_forwarded_address(wsbroker, forwarded,
                                                                      refused):
    # allow_anonymous not set and every listener on loopback: anonymous clients are welcome
    # from this machine only, and behind nginx "this machine" is what nginx says it is not.
    client_id = unique("anon")
    ws = RawWebSocket(wsbroker.ws_port)
    assert ws.request(extra=f"X-Forwarded-For: {forwarded}\r\n")[0] == 101
    ws.send_mqtt(Connect(client_id))
    assert ws.recv_packet().reason_code == refused
    if refused:
        wsbroker.wait_for_log(rf"connection refused: {client_id} from \S+: anonymous clients "
                              r"are allowed from loopback addresses only, and \S+ is remote")


def test_forwarded_header_from_an_untrusted_peer_is_ignored(broker_factory):
    proc, port = start_with_ws(broker_factory, 'trusted_proxies = ["192.0.2.1"]')
    client_id = unique("spoof")
    ws = RawWebSocket(port)
    assert ws.request(extra="X-Forwarded-For: 203.0.113.9\r\n")[0] == 101
    ws.send_mqtt(Connect(client_id))
    assert isinstance(ws.recv_packet(), ConnAck)
    proc.wait_for_log(rf"client connected: {client_id} from 127\.0\.0\.1:\d+ ")
