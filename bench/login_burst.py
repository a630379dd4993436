"""A wrong-password burst from one host, and what everyone else sees meanwhile (issue 13, 4).

Starts greenfly as a subprocess with a password file at the default cost (PBKDF2, 210,000
iterations) and `fsync = "always"`, then, from 127.0.0.1:
- a durable publisher: a persistent session publishing QoS 1 to a topic a persistent
  subscriber holds, so every PUBACK waits for an fsync; it times each PUBACK;
- after `--legit-after` seconds of the burst, a first-time login of a user who never
  logged in before (no cached check), timed to its CONNACK;
and from 127.0.0.2 (another loopback address, so the broker sees another host) `--attackers`
threads that each connect, send a wrong password, wait up to `--patience` seconds for the
CONNACK, hang up and start again, for `--seconds`. After they stop, it measures how long
the broker kept burning CPU (hashing for attackers that had left). Prints the figures; the
exit status is 0 whatever they are. Not part of the test suite.

    .venv/bin/python bench/login_burst.py [--attackers 200] [--seconds 10] [--patience 5]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from broker.auth.passwords import format_password_file, hash_password  # noqa: E402
from broker.codec import (  # noqa: E402
    Connect,
    FrameDecoder,
    Publish,
    SubOptions,
    Subscribe,
    encode,
)

ATTACKER_HOST = "127.0.0.2"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Raw:
    """One MQTT 3.1.1 client on a raw socket, from `source` (an address of this host)."""

    def __init__(self, port: int, source: str = "127.0.0.1", timeout: float = 10.0) -> None:
        self.sock = socket.socket()
        self.sock.bind((source, 0))
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.decoder = FrameDecoder(server_side=False)

    def send(self, packet: object) -> None:
        self.sock.sendall(encode(packet, 4))

    def recv(self) -> object:
        while True:
            packet = self.decoder.next_packet()
            if packet is not None:
                return packet
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("closed by the broker")
            self.decoder.feed(data)

    def connect(self, client_id: str, user: str, password: bytes, clean: bool = True) -> int:
        self.send(Connect(client_id, clean_start=clean, username=user, password=password))
        return self.recv().reason_code  # type: ignore[attr-defined]

    def close(self) -> None:
        self.sock.close()


def start_broker(workdir: Path, extra: str) -> tuple[subprocess.Popen, int]:
    log = workdir / "broker.log"
    config = workdir / "greenfly.toml"
    config.write_text(f'[broker]\ndata_dir = "{workdir / "data"}"\nsys_interval = 0\n'
                      f'password_file = "{workdir / "passwd"}"\nallow_anonymous = false\n'
                      f"{extra}\n[limits]\nmax_queued_messages = 0\n"
                      '[persistence]\nfsync = "always"\n[log]\nlevel = "info"\n'
                      '[[listener]]\nbind = "127.0.0.1"\nport = 0\n')
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "broker", "-c", str(config)], cwd=REPO,
                                stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        for line in log.read_text(errors="replace").splitlines():
            if "listening: mqtt on" in line:
                return proc, int(line.split("listening: mqtt on ")[1].split(";")[0]
                                  .rsplit(":", 1)[1])
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"broker did not start:\n{log.read_text()[-2000:]}")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))] if ordered else float("nan")


def attack(port: int, args: argparse.Namespace, results: multiprocessing.Queue) -> None:
    """In a child process: `args.attackers` threads guessing for `args.seconds`; puts what
    they were answered on `results` once all have hung up."""
    outcomes: Counter[str] = Counter()
    done = threading.Event()

    def guess(i: int) -> None:
        n = 0
        while not done.is_set():
            n += 1
            try:
                client = Raw(port, ATTACKER_HOST, timeout=args.patience)
            except OSError:
                outcomes["connect failed"] += 1
                continue
            try:
                if args.anonymous:
                    client.send(Connect(f"guess-{i}-{n}"))
                    code = client.recv().reason_code  # type: ignore[attr-defined]
                else:
                    code = client.connect(f"guess-{i}-{n}", "alice", b"guess-%d-%d" % (i, n))
                outcomes[f"CONNACK 0x{code:02x}"] += 1
            except TimeoutError:
                outcomes["gave up waiting"] += 1
            except (ConnectionError, OSError):
                outcomes["closed without CONNACK"] += 1
            finally:
                client.close()

    threads = [threading.Thread(target=guess, args=(i,)) for i in range(args.attackers)]
    for thread in threads:
        thread.start()
    time.sleep(args.seconds)
    done.set()
    for thread in threads:
        thread.join()
    results.put(outcomes)


def run(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="login-burst-"))
    users = {name: hash_password(name + "-pw") for name in ("pub", "sub", "alice", "carol")}
    (workdir / "passwd").write_text(format_password_file(users))
    proc, port = start_broker(workdir, args.broker_config)
    try:
        measure(args, proc, port)
    finally:
        proc.terminate()
        proc.wait(15)
    print(f"broker log: {workdir / 'broker.log'}")


def measure(args: argparse.Namespace, proc: subprocess.Popen, port: int) -> None:
    sub = Raw(port)
    assert sub.connect("burst-sub", "sub", b"sub-pw", clean=False) == 0
    sub.send(Subscribe(1, (("burst/durable", SubOptions(1)),)))
    sub.recv()
    sub.close()  # offline: each message is queued in the journal, fsynced before PUBACK
    pub = Raw(port)
    assert pub.connect("burst-pub", "pub", b"pub-pw", clean=False) == 0
    stop = threading.Event()
    pubacks: list[tuple[float, float]] = []  # (when, latency)
    legit: list[str] = []

    waiting_since: list[float] = []  # the PUBLISH still waiting for its PUBACK, if any

    def publish() -> None:
        pub.sock.settimeout(0.5)
        packet_id = 0
        while not stop.is_set():
            packet_id = packet_id % 60000 + 1
            start = time.monotonic()
            waiting_since[:] = [start]
            pub.send(Publish("burst/durable", b"x", qos=1, packet_id=packet_id))
            while True:
                try:
                    pub.recv()
                    break
                except TimeoutError:
                    if stop.is_set():
                        return
            waiting_since.clear()
            pubacks.append((start, time.monotonic() - start))
            time.sleep(0.02)

    def legit_login() -> None:
        start = time.monotonic()
        try:
            client = Raw(port, timeout=15)
            code = client.connect("burst-legit", "carol", b"carol-pw")
            legit.append(f"CONNACK 0x{code:02x} after {time.monotonic() - start:.3f}s")
            client.close()
        except (OSError, ConnectionError) as exc:
            legit.append(f"no CONNACK after {time.monotonic() - start:.3f}s ({exc})")

    publisher = threading.Thread(target=publish, daemon=True)
    publisher.start()
    time.sleep(1.0)
    baseline = [lat for _, lat in pubacks]
    burst_start = time.monotonic()
    cpu_start = cpu_seconds(proc.pid)
    results: multiprocessing.Queue[Counter[str]] = multiprocessing.Queue()
    attackers = multiprocessing.Process(target=attack, args=(port, args, results))
    attackers.start()  # a process of its own: its threads do not slow the publisher's
    time.sleep(args.legit_after)
    login = threading.Thread(target=legit_login)
    login.start()
    time.sleep(max(0.0, burst_start + args.seconds - time.monotonic()))
    outcomes = results.get(timeout=args.patience + 30)
    cpu_burst = cpu_seconds(proc.pid) - cpu_start
    attackers.join(10)
    login.join(20)
    left = time.monotonic()  # every attacker has hung up
    # How long the broker keeps working for clients that are gone: until a 0.5 s window
    # uses under 15 % of a CPU (the durable publisher alone uses less).
    busy_until = left
    while time.monotonic() - left < 60:
        before = cpu_seconds(proc.pid)
        time.sleep(0.5)
        if cpu_seconds(proc.pid) - before < 0.075:
            break
        busy_until = time.monotonic()
    stop.set()
    stuck = time.monotonic() - waiting_since[0] if waiting_since else None
    publisher.join(10)
    during = [lat for when, lat in pubacks if when >= burst_start]  # the tail too
    print(f"attackers: {args.attackers} threads from {ATTACKER_HOST} for {args.seconds:g}s, "
          f"patience {args.patience:g}s: " + ", ".join(f"{k}: {v}" for k, v in
                                                      sorted(outcomes.items())))
    print(f"broker CPU during the burst: {cpu_burst:.1f}s, "
          f"{cpu_burst / max(1, sum(outcomes.values())) * 1000:.2f} ms per attempt answered")
    print(f"durable PUBACK before the burst: median {percentile(baseline, .5) * 1000:.1f} ms")
    print(f"durable PUBACK from the burst on ({len(during)}): median "
          f"{percentile(during, .5) * 1000:.1f} ms, p99 {percentile(during, .99) * 1000:.1f} ms,"
          f" max {max(during, default=float('nan')) * 1000:.1f} ms"
          + (f"; one still unanswered after {stuck:.1f}s" if stuck is not None else ""))
    worst = sorted(((lat, when - burst_start) for when, lat in pubacks if when >= burst_start),
                   reverse=True)[:3]
    print("slowest PUBACKs (ms at seconds into the burst): "
          + ", ".join(f"{lat * 1000:.0f} at {at:+.1f}s" for lat, at in worst))
    print(f"first-time login {args.legit_after:g}s into the burst: {legit[0] if legit else '?'}")
    print(f"broker busy after the attackers left: {busy_until - left:.1f}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--attackers", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0, help="burst length")
    parser.add_argument("--patience", type=float, default=5.0,
                        help="seconds an attacker waits for its CONNACK before hanging up")
    parser.add_argument("--legit-after", type=float, default=3.0,
                        help="seconds into the burst of the first-time legitimate login")
    parser.add_argument("--anonymous", action="store_true",
                        help="attackers send no user name: nothing to hash (a control: what "
                        "the connections alone cost)")
    parser.add_argument("--broker-config", default="",
                        help="extra [broker] keys, e.g. 'hash_threads = 2'")
    run(parser.parse_args())


if __name__ == "__main__":
    main()
