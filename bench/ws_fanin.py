"""QoS 0 fan-in over WebSockets beside TCP: N publishers -> 1 subscriber, delivered msgs/s.

Starts greenfly as a subprocess (pinned to CPU 0 when the machine has two or more), and runs
a one-process load generator (pinned to CPU 1) that never encodes on the hot path: each
publisher writes one pre-encoded buffer of PUBLISH packets over and over, and the
subscriber counts delivered bytes (every delivered packet has the same size). Over
WebSockets the publishers send one masked binary frame per packet, as MQTT.js does
(`--frames batch` puts a whole buffer in one frame instead). Prints the delivered rate for
TCP and for WebSockets, the ratio, and the CPU each side used. Not part of the test suite.

    .venv/bin/python bench/ws_fanin.py [--seconds 5] [--publishers 10] [--payload 64]
"""

from __future__ import annotations

import argparse
import base64
import os
import selectors
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from broker.codec import Connect, Publish, SubOptions, Subscribe, encode  # noqa: E402

BATCH = 1000  # packets in one pre-encoded publisher buffer


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ws_frame(payload: bytes) -> bytes:
    """A masked client binary frame (a zero mask: the broker must unmask it all the same)."""
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", 0x82, 0x80 | n)
    elif n < 65536:
        header = struct.pack("!BBH", 0x82, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", 0x82, 0x80 | 127, n)
    return header + b"\x00\x00\x00\x00" + payload


class Client:
    def __init__(self, port: int, websocket: bool) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.websocket = websocket
        self.rest = b""
        if websocket:
            key = base64.b64encode(os.urandom(16)).decode()
            self.sock.sendall((f"GET /mqtt HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\n"
                               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                               "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n"
                               "\r\n").encode())
            while b"\r\n\r\n" not in self.rest:
                self.rest += self.sock.recv(65536)
            head, self.rest = self.rest.split(b"\r\n\r\n", 1)
            assert head.startswith(b"HTTP/1.1 101"), head

    def send_packets(self, *packets: object) -> None:
        data = b"".join(encode(p, 4) for p in packets)
        self.sock.sendall(ws_frame(data) if self.websocket else data)

    def read_some(self, n: int) -> None:
        """Read at least n bytes (a CONNACK, a SUBACK) before the hot loop starts."""
        while len(self.rest) < n:
            self.rest += self.sock.recv(65536)
        self.rest = b""


class Counter:
    """Counts MQTT bytes arriving on the subscriber, stripping server frame headers for WS."""

    def __init__(self, websocket: bool) -> None:
        self.websocket = websocket
        self.mqtt_bytes = 0
        self.buf = b""
        self.left = 0  # payload bytes of the current frame still to come

    def feed(self, data: bytes) -> None:
        if not self.websocket:
            self.mqtt_bytes += len(data)
            return
        buf = self.buf + data if self.buf else data
        pos, end = 0, len(buf)
        while pos < end:
            if self.left:
                take = min(self.left, end - pos)
                self.mqtt_bytes += take
                self.left -= take
                pos += take
                continue
            if end - pos < 2:
                break
            n = buf[pos + 1] & 0x7F
            head = 2 if n < 126 else 4 if n == 126 else 10
            if end - pos < head:
                break
            if n == 126:
                n = struct.unpack_from("!H", buf, pos + 2)[0]
            elif n == 127:
                n = struct.unpack_from("!Q", buf, pos + 2)[0]
            pos += head
            self.left = n
        self.buf = buf[pos:]


def run_case(port: int, websocket: bool, args: argparse.Namespace, broker_pid: int) -> dict:
    payload = bytes(args.payload)
    subscriber = Client(port, websocket)
    subscriber.send_packets(Connect("bench-sub", keepalive=0),
                            Subscribe(1, (("bench/#", SubOptions(0)),)))
    subscriber.read_some(4 + 5)  # CONNACK + SUBACK
    publishers = []
    for i in range(args.publishers):
        client = Client(port, websocket)
        client.send_packets(Connect(f"bench-pub-{i}", keepalive=0))
        client.read_some(4)
        packet = encode(Publish(f"bench/{i:03d}", payload, 0), 4)
        if not websocket:
            buffer = packet * BATCH
        elif args.frames == "batch":
            buffer = ws_frame(packet * BATCH)
        else:
            buffer = ws_frame(packet) * BATCH
        client.sock.setblocking(False)
        publishers.append((client.sock, memoryview(buffer)))
    delivered_size = len(encode(Publish("bench/000", payload, 0), 4))

    selector = selectors.DefaultSelector()
    subscriber.sock.setblocking(False)
    selector.register(subscriber.sock, selectors.EVENT_READ, None)
    offsets = {}
    for sock, buffer in publishers:
        selector.register(sock, selectors.EVENT_WRITE, buffer)
        offsets[sock] = 0
    counter = Counter(websocket)
    start = time.monotonic()
    warm_until = start + args.warmup
    stop_at = warm_until + args.seconds
    measured_from = None
    while True:
        now = time.monotonic()
        if measured_from is None and now >= warm_until:
            measured_from = (now, counter.mqtt_bytes, cpu_seconds(broker_pid),
                             sum(os.times()[:2]))
        if now >= stop_at:
            break
        for key, _mask in selector.select(0.1):
            sock = key.fileobj
            if key.data is None:
                try:
                    while True:
                        data = sock.recv(1 << 20)
                        if not data:
                            raise SystemExit("the broker closed the subscriber")
                        counter.feed(data)
                except BlockingIOError:
                    pass
            else:
                buffer = key.data
                try:
                    sent = sock.send(buffer[offsets[sock]:])
                except BlockingIOError:
                    continue
                offsets[sock] = (offsets[sock] + sent) % len(buffer)
    t0, bytes0, broker_cpu0, own_cpu0 = measured_from
    elapsed = time.monotonic() - t0
    result = {
        "rate": (counter.mqtt_bytes - bytes0) / delivered_size / elapsed,
        "broker_cpu": (cpu_seconds(broker_pid) - broker_cpu0) / elapsed,
        "loadgen_cpu": (sum(os.times()[:2]) - own_cpu0) / elapsed,
    }
    selector.close()
    for sock, _buffer in publishers:
        sock.close()
    subscriber.sock.close()
    return result


def start_broker(workdir: Path, tcp: int, ws: int) -> subprocess.Popen:
    config = workdir / "greenfly.toml"
    config.write_text(
        f'[broker]\ndata_dir = "{workdir}/data"\nsys_interval = 0\n\n'
        f'[limits]\nmax_queued_messages = 0\n\n'
        f'[[listener]]\nport = {tcp}\nprotocol = "mqtt"\n\n'
        f'[[listener]]\nport = {ws}\nprotocol = "websockets"\n\n[log]\nlevel = "warning"\n')
    command = [sys.executable, "-m", "broker", "-c", str(config)]
    if (os.cpu_count() or 1) >= 2 and subprocess.run(["which", "taskset"],
                                                     capture_output=True).returncode == 0:
        command = ["taskset", "-c", "0", *command]
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL)
    for port in (tcp, ws):
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit("greenfly did not start") from None
                time.sleep(0.05)
    return proc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--publishers", type=int, default=10)
    parser.add_argument("--payload", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--frames", choices=("per-packet", "batch"), default="per-packet")
    args = parser.parse_args()
    if (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {1})
    tcp_port, ws_port = free_port(), free_port()
    with tempfile.TemporaryDirectory() as tmp:
        broker = start_broker(Path(tmp), tcp_port, ws_port)
        try:
            rates: dict[str, list[dict]] = {"tcp": [], "ws": []}
            for _ in range(args.repeat):  # interleaved, so drift hits both alike
                rates["tcp"].append(run_case(tcp_port, False, args, broker.pid))
                rates["ws"].append(run_case(ws_port, True, args, broker.pid))
        finally:
            broker.terminate()
            try:
                broker.wait(10)
            except subprocess.TimeoutExpired:
                print("greenfly did not stop within 10 s of SIGTERM; killed", file=sys.stderr)
                broker.kill()
                broker.wait(5)
    print(f"QoS 0 fan-in, {args.publishers} publishers -> 1 subscriber, {args.payload}-byte "
          f"payloads, {args.seconds:g}s x {args.repeat}, WS frames: {args.frames}")
    medians = {}
    for name, runs in rates.items():
        ordered = sorted(r["rate"] for r in runs)
        medians[name] = ordered[len(ordered) // 2]
        cpu = sorted(r["broker_cpu"] for r in runs)[len(runs) // 2]
        own = sorted(r["loadgen_cpu"] for r in runs)[len(runs) // 2]
        print(f"  {name:3}: {medians[name]:10,.0f} msgs/s delivered (min {ordered[0]:,.0f}, "
              f"max {ordered[-1]:,.0f}); broker CPU {cpu:.0%}, load generator CPU {own:.0%}")
    print(f"  ws/tcp throughput: {medians['ws'] / medians['tcp']:.2f}  "
          f"(cost per message ws/tcp: {medians['tcp'] / medians['ws']:.2f}x)")
    # The machine may be shared: broker CPU per delivered message is the steadier figure.
    cost = {name: sorted(r["broker_cpu"] / r["rate"] * 1e6 for r in runs)[len(runs) // 2]
            for name, runs in rates.items()}
    print(f"  broker CPU per delivered message: tcp {cost['tcp']:.1f} us, ws {cost['ws']:.1f} us"
          f", ws/tcp {cost['ws'] / cost['tcp']:.2f}x")


if __name__ == "__main__":
    main()
