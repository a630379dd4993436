"""Where an idle connection's bytes and a connect's microseconds go, inside greenfly.

Runs greenfly in a child process (the bench's config: persistence on, warning log level)
with tracemalloc on, opens `--conns` MQTT 3.1.1 connections (keepalive 30, clean session,
a client id of 23 characters) from this process, and has the child report:
- the traced bytes the connections added, per connection, grouped by the line that
  allocated them (tracemalloc snapshot before and after, compared);
- the number of objects of each type they added (gc), per connection;
- a cProfile of the broker while the connections were opened (`--profile`), top functions
  by their own time.
Without tracemalloc (`--no-trace`) the child reports RSS per connection only, the bench's
figure. Not part of the test suite.

    .venv/bin/python bench/idle_profile.py [--conns 2000] [--profile] [--no-trace]
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def connect_packet(client_id: str, keepalive: int = 30) -> bytes:
    cid = client_id.encode()
    body = (b"\x00\x04MQTT\x04\x02" + struct.pack("!H", keepalive)
            + struct.pack("!H", len(cid)) + cid)
    return bytes([0x10, len(body)]) + body


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


# -- the child: greenfly with the probes -----------------------------------------------------

def child(config_path: str, report: str, trace: bool, profile: bool) -> None:
    import tracemalloc

    if trace:
        tracemalloc.start(4)
    import gevent

    from broker.cli import setup_logging, tune_gc
    from broker.config.loading import load_file
    from broker.server.root import Broker

    config = load_file(config_path)
    setup_logging(config.log.level, config.log.format)
    broker = Broker(config)
    tune_gc()
    state: dict[str, object] = {}
    out = open(report, "w")  # noqa: SIM115 - kept open for the child's life

    def types() -> dict[str, int]:
        counts: dict[str, int] = {}
        for obj in gc.get_objects():
            name = type(obj).__qualname__
            counts[name] = counts.get(name, 0) + 1
        return counts

    def before() -> None:
        gc.collect()
        state["types"] = types()
        if trace:
            state["snap"] = tracemalloc.take_snapshot()
        if profile:
            import cProfile

            state["prof"] = cProfile.Profile()
            state["prof"].enable()  # type: ignore[attr-defined]
        out.write("ready\n")
        out.flush()

    def after() -> None:
        n = len(broker.connections)
        prof = state.get("prof")
        if prof is not None:
            prof.disable()  # type: ignore[attr-defined]
        gc.collect()
        lines = [f"connections {n}"]
        if trace:
            snap = tracemalloc.take_snapshot().filter_traces(
                [tracemalloc.Filter(False, tracemalloc.__file__)])
            stats = snap.compare_to(state["snap"], "lineno")  # type: ignore[arg-type]
            total = sum(s.size_diff for s in stats)
            lines.append(f"traced bytes per connection {total / n:.1f}")
            for s in stats[:40]:
                if abs(s.size_diff) / n < 2:
                    break
                frame = s.traceback[0]
                lines.append(f"{s.size_diff / n:8.1f} B {s.count_diff / n:6.2f} blocks  "
                             f"{frame.filename.replace(str(REPO) + '/', '')}:{frame.lineno}")
        now = types()
        old = state["types"]
        grown = sorted(((count - old.get(name, 0), name) for name, count in now.items()),  # type: ignore[attr-defined]
                       reverse=True)
        lines.append("gc-tracked objects per connection:")
        for count, name in grown[:25]:
            if count / n < 0.05:
                break
            lines.append(f"  {count / n:5.2f} {name}")
        if prof is not None:
            import io
            import pstats

            text = io.StringIO()
            pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(35)  # type: ignore[arg-type]
            lines.append(text.getvalue())
        out.write("\n".join(lines) + "\ndone\n")
        out.flush()

    gevent.signal_handler(signal.SIGUSR1, lambda: gevent.spawn(before))
    gevent.signal_handler(signal.SIGUSR2, lambda: gevent.spawn(after))
    broker.serve_forever()


# -- the parent: the clients -----------------------------------------------------------------

def wait_line(path: Path, word: str, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = path.read_text() if path.exists() else ""
        if word + "\n" in text:
            return text
        time.sleep(0.05)
    raise TimeoutError(word)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--conns", type=int, default=2000)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--no-trace", action="store_true")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], not args.no_trace, args.profile)
        return
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        (work / "data").mkdir()
        config = work / "greenfly.toml"
        config.write_text(
            f'[broker]\ndata_dir = "{work / "data"}"\nsys_interval = 0\n\n'
            "[limits]\nmax_inflight_messages = 0\nmax_queued_messages = 0\n"
            "max_queued_bytes = 0\nmax_outbox_bytes = 0\n\n"
            '[persistence]\nenabled = true\nfsync = "never"\n\n'
            f'[[listener]]\nbind = "127.0.0.1"\nport = {port}\nprotocol = "mqtt"\n\n'
            '[log]\nlevel = "warning"\n')
        report = work / "report"
        cmd = [sys.executable, __file__, "--child", str(config), str(report)]
        if args.profile:
            cmd.append("--profile")
        if args.no_trace:
            cmd.append("--no-trace")
        proc = subprocess.Popen(cmd, cwd=REPO)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), 1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.02)
            time.sleep(0.3)
            os.kill(proc.pid, signal.SIGUSR1)
            wait_line(report, "ready")
            rss0 = rss_kib(proc.pid)
            socks = []
            started = time.monotonic()
            for i in range(args.conns):
                s = socket.create_connection(("127.0.0.1", port))
                s.sendall(connect_packet(f"idle-profile-{i:010d}"))
                ack = s.recv(4)
                assert ack == b"\x20\x02\x00\x00", ack
                socks.append(s)
            elapsed = time.monotonic() - started
            time.sleep(1.5)  # past PARK_AFTER and a malloc_trim tick
            rss1 = rss_kib(proc.pid)
            os.kill(proc.pid, signal.SIGUSR2)
            text = wait_line(report, "done")
            print(text.split("ready\n", 1)[1].rsplit("done", 1)[0])
            print(f"RSS per connection {(rss1 - rss0) / args.conns:.3f} KiB "
                  f"({rss0} -> {rss1} KiB); {args.conns / elapsed:.0f} connects/s "
                  "(one client at a time, with the probes)")
            for s in socks:
                s.close()
        finally:
            proc.terminate()
            proc.wait(15)


if __name__ == "__main__":
    main()
