"""Slow readers: does greenfly bound what it holds for subscribers that stop reading, and give
the memory back once they leave?

Starts greenfly as a subprocess on a loopback port 0, then runs `--cycles` rounds of: open
`--conns` raw subscribers to `slow/#` (QoS 0, a small receive buffer) that never read after
SUBACK, publish `--messages` QoS 0 messages of `--payload` bytes (each subscriber is owed all
of them), wait for the publisher's PINGRESP (the broker has handled every publish), note the
broker's resident memory (peak), close the subscribers, wait until the broker closed their
sockets and its watchdog had its once-a-second chance to give memory back, and note its
memory again. Prints the baseline (after start-up and one warm-up
connection), the peak and the after-close RSS of each cycle, the final RSS against the
baseline, and the drops counted in $SYS. Not part of the test suite.

    .venv/bin/python bench/slow_readers.py [--cycles 10] [--conns 1000] [--messages 300]
        [--payload 1024] [--outbox-bytes N]   # N: [limits] max_outbox_bytes; unset: default
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LISTENING = re.compile(r"listening: mqtt on \S+:(\d+)")


def remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def utf8(text: str) -> bytes:
    data = text.encode()
    return struct.pack("!H", len(data)) + data


def connect_packet(client_id: str) -> bytes:
    body = utf8("MQTT") + bytes([4, 0x02]) + struct.pack("!H", 600) + utf8(client_id)
    return b"\x10" + remaining_length(len(body)) + body


def subscribe_packet(topic_filter: str, qos: int = 0) -> bytes:
    body = struct.pack("!H", 1) + utf8(topic_filter) + bytes([qos])
    return b"\x82" + remaining_length(len(body)) + body


def publish_packet(topic: str, payload: bytes) -> bytes:
    body = utf8(topic) + payload
    return b"\x30" + remaining_length(len(body)) + body


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        data += chunk
    return data


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def start_broker(workdir: Path, outbox_bytes: int | None) -> tuple[subprocess.Popen, int]:
    limits = f"\n[limits]\nmax_outbox_bytes = {outbox_bytes}\n" if outbox_bytes is not None else ""
    config = workdir / "greenfly.toml"
    config.write_text(f'[broker]\ndata_dir = "{workdir / "data"}"\nsys_interval = 1\n\n'
                      '[[listener]]\nbind = "127.0.0.1"\nport = 0\n'
                      f'{limits}\n[persistence]\nenabled = false\n\n[log]\nlevel = "info"\n')
    log = workdir / "broker.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "broker", "-c", str(config)], cwd=REPO,
                                stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        found = LISTENING.search(log.read_text(errors="replace"))
        if found:
            return proc, int(found[1])
        if proc.poll() is not None:
            raise RuntimeError(log.read_text())
        time.sleep(0.05)
    proc.kill()
    raise TimeoutError("broker did not start")


def client(port: int, client_id: str, rcvbuf: int | None = None) -> socket.socket:
    sock = socket.socket()
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect(("127.0.0.1", port))
    sock.sendall(connect_packet(client_id))
    assert recv_exactly(sock, 4)[:2] == b"\x20\x02"
    return sock


def settle(pid: int, fds: int, timeout: float = 60.0) -> float:
    """Wait until the broker holds `fds` descriptors again; seconds it took."""
    started = time.monotonic()
    while open_fds(pid) > fds:
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"broker still holds {open_fds(pid)} fds, want {fds}")
        time.sleep(0.05)
    return time.monotonic() - started


def sys_value(port: int, topic: str) -> str:
    sock = client(port, f"sys-{os.getpid()}")
    sock.sendall(subscribe_packet(topic))
    sock.settimeout(10)
    data = b""
    while b"\x90" not in data[:1] or len(data) < 5:
        data += sock.recv(65536)
    data = data[5:]  # the SUBACK
    while True:
        while len(data) < 2:
            data += sock.recv(65536)
        length, at, shift = 0, 1, 0
        while True:
            byte = data[at]
            length |= (byte & 0x7F) << shift
            at += 1
            shift += 7
            if not byte & 0x80:
                break
        while len(data) < at + length:
            data += sock.recv(65536)
        body = data[at:at + length]
        topic_len = struct.unpack("!H", body[:2])[0]
        sock.close()
        return body[2 + topic_len:].decode()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=10)
    parser.add_argument("--conns", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--payload", type=int, default=1024)
    parser.add_argument("--outbox-bytes", type=int, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="greenfly-slow-") as tmp:
        proc, port = start_broker(Path(tmp), args.outbox_bytes)
        try:
            run(proc.pid, port, args)
            print("dropped ($SYS publish/messages/dropped):",
                  sys_value(port, "$SYS/broker/publish/messages/dropped"))
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
    return 0


def run(pid: int, port: int, args: argparse.Namespace) -> None:
    publisher = client(port, "publisher")
    warm = client(port, "warm-up")
    warm.close()
    fds = open_fds(pid)
    settle(pid, fds)
    time.sleep(0.5)
    baseline = rss_kib(pid)
    print(f"baseline RSS {baseline / 1024:.1f} MiB; {args.cycles} cycles of {args.conns} slow "
          f"readers, {args.messages} x {args.payload} B each")
    payload = b"x" * args.payload
    burst = publish_packet("slow/t", payload) * args.messages
    for cycle in range(1, args.cycles + 1):
        started = time.monotonic()
        readers = []
        for index in range(args.conns):
            # the same ids every cycle, as devices that come back
            sock = client(port, f"slow-{index}", rcvbuf=4096)
            sock.sendall(subscribe_packet("slow/#"))
            readers.append(sock)
        for sock in readers:
            assert recv_exactly(sock, 5)[0] == 0x90  # SUBACK; then never read again
        publisher.sendall(burst + b"\xc0\x00")  # and PINGREQ: handled after every publish
        assert recv_exactly(publisher, 2) == b"\xd0\x00"
        time.sleep(0.5)  # the flushes of this iteration
        peak = rss_kib(pid)
        for sock in readers:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
        took = settle(pid, fds)
        # The broker gives freed memory back from its watchdog, once a second at most
        # (server/memory.py): read after its next round, not before it.
        time.sleep(1.5)
        after = rss_kib(pid)
        print(f"cycle {cycle:2d}: peak {peak / 1024:7.1f} MiB, after close {after / 1024:7.1f} "
              f"MiB ({(after - baseline) / baseline:+.1%} of baseline), sockets closed in "
              f"{took:.1f}s, cycle {time.monotonic() - started:.1f}s")
    final = rss_kib(pid)
    print(f"final RSS {final / 1024:.1f} MiB = {(final - baseline) / baseline:+.1%} of baseline")


if __name__ == "__main__":
    sys.exit(main())
