"""Restart, in-process: where greenfly's start-up time and bytes go with a journal full of
queued messages, without sockets or a second broker.

Writes a journal like the one the restart scenario's fill leaves (`--sessions` persistent,
offline sessions subscribed to a topic each, `--per-session` QoS 1 messages of `--payload`
bytes queued for each, interleaved as ten publishers send them: one `MessageQueued` each),
then loads it the way `Broker.start` does (`JournalStore.load`, `SessionRegistry.restore`)
and prints, per phase, the wall time and the Python heap it leaves (tracemalloc), the peak
heap while restarting against the live state after it, and a `sys.getsizeof` walk of one
queued message. `--profile N` prints cProfile's N most expensive functions instead.
Not part of the test suite.

    .venv/bin/python bench/restart_profile.py [--sessions 1000] [--per-session 100]
        [--payload 64] [--profile 25] [--compacted]   # a compacted journal instead
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import os
import pstats
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from broker.config.loading import load_text
from broker.core.context import BrokerContext
from broker.core.session import queued_entry
from broker.server.journal_writer import JournalStore
from broker.store.journal_file import HEADER, JOURNAL_NAME
from broker.store.record_codec import encode_frame
from broker.store.records import (
    MessageQueued,
    Record,
    SessionClosed,
    SessionOpened,
    Subscribed,
)


def journal_records(sessions: int, per_session: int, payload: int) -> list[Record]:
    """What the restart scenario's fill writes, in its order."""
    records: list[Record] = []
    for s in range(sessions):
        cid = f"gfb-fill-s{s:05d}"
        records += [SessionOpened(cid, 4, 0), Subscribed(cid, f"b/tag/q/s{s:05d}", 1),
                    SessionClosed(cid, 1.7e9)]
    msg_id = 0
    for n in range(per_session):
        for s in range(sessions):
            msg_id += 1
            body = (b"GFLY" + s.to_bytes(4, "big") + n.to_bytes(8, "big")).ljust(payload, b"x")
            records.append(MessageQueued(msg_id, f"b/tag/q/s{s:05d}", body, 1, False, "gfb-pub",
                                         {}, f"gfb-fill-s{s:05d}", 1, False, 0))
    return records


def write_journal(data_dir: str, records: list[Record]) -> int:
    path = os.path.join(data_dir, JOURNAL_NAME)
    with open(path, "wb") as fh:
        fh.write(HEADER)
        fh.writelines(encode_frame(record) for record in records)
    return os.path.getsize(path)


def compacted(data_dir: str, records: list[Record]) -> list[Record]:
    """The snapshot a compaction of this journal would write."""
    ctx = restored(data_dir)[0]
    return ctx.registry.snapshot_records(ctx.retained)


def restored(data_dir: str) -> tuple[BrokerContext, JournalStore]:
    config = load_text(f'[broker]\ndata_dir = "{data_dir}"\n\n[limits]\n'
                       "max_queued_messages = 0\nmax_queued_bytes = 0\n", "bench")
    store = JournalStore(data_dir, fsync="never")
    ctx = BrokerContext.build(config, store)
    state = store.load()
    ctx.registry.restore(state, ctx.retained, release=True)
    return ctx, store


def walk_one_message(ctx: BrokerContext) -> None:
    """sys.getsizeof of what one queued message holds (the objects only it refers to)."""
    session = next(iter(ctx.registry.sessions.values()))
    entry = session.queue[0]
    message = queued_entry(entry)[0]
    parts = {"queue entry (tuple; 0: the message itself)":
             sys.getsizeof(entry) if entry is not message else 0,
             "Message": sys.getsizeof(message),
             "payload bytes": sys.getsizeof(message.payload),
             "topic str (shared by the session's messages?)": sys.getsizeof(message.topic),
             "deque slot": 8}
    for name, size in parts.items():
        print(f"    {name:48s} {size:6d} B")
    same_topic = queued_entry(session.queue[1])[0].topic is message.topic
    print(f"    topic object shared between one session's messages: {same_topic}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--per-session", type=int, default=100)
    parser.add_argument("--payload", type=int, default=64)
    parser.add_argument("--compacted", action="store_true")
    parser.add_argument("--profile", type=int, default=0, help="print cProfile's top N")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gf-restart-") as data_dir:
        records = journal_records(args.sessions, args.per_session, args.payload)
        write_journal(data_dir, records)
        if args.compacted:
            records = compacted(data_dir, records)
            os.unlink(os.path.join(data_dir, JOURNAL_NAME))
        size = write_journal(data_dir, records)
        del records
        gc.collect()
        total = args.sessions * args.per_session
        print(f"journal: {len(HEADER) and size:,} bytes, {total:,} queued messages"
              f"{' (compacted)' if args.compacted else ''}")
        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            restored(data_dir)
            profiler.disable()
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(args.profile)
            return
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        started = time.perf_counter()
        ctx, store = restored(data_dir)
        took = time.perf_counter() - started
        gc.collect()
        live, peak = tracemalloc.get_traced_memory()
        live -= base
        peak -= base
        tracemalloc.stop()
        print(f"load + restore: {took * 1000:,.0f} ms ({took / total * 1e6:.1f} µs/message) "
              "[under tracemalloc]")
        print(f"live state after restore: {live / 1e6:.1f} MB ({live / total:.0f} B/message); "
              f"peak while restoring {peak / 1e6:.1f} MB = {peak / live:.2f}x the live state")
        store.close()
        walk_one_message(ctx)
        # Time again without tracemalloc, phase by phase.
        ctx = store = None  # type: ignore[assignment]
        gc.collect()
        timed(data_dir, total)


def timed(data_dir: str, total: int) -> None:
    from broker.store.journal_file import scan_journal

    scans, loads = [], []
    for _ in range(3):  # the best of three: the machine is shared
        t0 = time.perf_counter()
        found = scan_journal(os.path.join(data_dir, JOURNAL_NAME))
        scans.append(time.perf_counter() - t0)
        del found
        gc.collect()
        t0 = time.perf_counter()
        ctx, store = restored(data_dir)
        loads.append(time.perf_counter() - t0)
        store.close()
        del ctx, store
        gc.collect()
    print(f"best of 3: scan into records alone {min(scans) * 1000:,.0f} ms; load + restore "
          f"{min(loads) * 1000:,.0f} ms ({min(loads) / total * 1e6:.1f} µs/message)")


if __name__ == "__main__":
    main()
