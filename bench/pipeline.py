"""CPU per message through greenfly's own code, without sockets or a second process.

`durable` is QoS 1 to a persistent subscriber on the journal: the CPU of building and
encoding its records (the writes themselves are measured end to end by run.py).

Feeds pre-encoded PUBLISH batches to a real `Connection` (reader path: decoder, protocol,
router, sessions) whose subscribers are real `Connection`s writing to a transport that
discards, and reports microseconds per delivered message. Deterministic enough to compare
one change with the next on a busy machine; the end-to-end figures come from `run.py`.

    .venv/bin/python bench/pipeline.py [--scenario fanin|fanout|qos1|durable] [--messages N]
                                       [--protocol-level 4|5]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

# bench/ is not a package: the in-process harness lives with the tests that share it.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from support.inprocess import ManualFlush, connect

from broker.codec import Publish, SubOptions, Subscribe, encode
from broker.config.loading import load_text
from broker.core.context import BrokerContext
from broker.server.journal_writer import JournalStore
from broker.store.memory import MemoryStore


def run(scenario: str, messages: int, level: int = 4) -> float:
    config = load_text('[limits]\nmax_inflight_messages = 0\nmax_queued_messages = 0\n'
                       '[persistence]\nenabled = false\n', "bench")
    durable = scenario == "durable"
    store = JournalStore(tempfile.mkdtemp(prefix="pipeline-"), "never") if durable \
        else MemoryStore()
    if durable:
        store.load()
    ctx = BrokerContext.build(config, store)
    subscribers = 100 if scenario == "fanout" else 1
    qos = 1 if scenario in ("qos1", "durable") else 0
    flusher = ManualFlush()
    subs = [connect(ctx, f"sub-{i}", clean=not durable, flusher=flusher, protocol_level=level)
            for i in range(subscribers)]
    for sub in subs:
        sub.protocol.handle(Subscribe(1, (("bench/#", SubOptions(qos)),)))
    pub = connect(ctx, "pub", flusher=flusher, protocol_level=level)
    batch = 256
    payload = b"x" * 64
    packets = [encode(Publish(f"bench/{i % 10}", payload, qos, packet_id=(i % 60000) + 1),
                      level) for i in range(batch)]
    data = b"".join(packets)
    rounds = max(1, messages // batch)
    start = time.perf_counter()
    for _ in range(rounds):
        pub.decoder.feed(data)
        while True:
            packet = pub.decoder.next_packet()
            if packet is None:
                break
            pub.protocol.handle(packet)
        pub.outbox.items.clear()  # the publisher's acks: not what is measured
        flusher.flush_now()  # what the hub does at the end of the loop iteration
        if qos:
            for sub in subs:
                for packet_id in list(sub.protocol.session.inflight):
                    sub.protocol.session.on_puback(packet_id)
        if durable:
            store._pending.clear()  # the disk side is measured end to end by run.py
    elapsed = time.perf_counter() - start
    delivered = rounds * batch * subscribers
    return elapsed / delivered * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", choices=("fanin", "fanout", "qos1", "durable"),
                        default="fanin")
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--protocol-level", type=int, choices=(4, 5), default=4,
                        help="every client's MQTT level; 5: packets with property length 0, "
                        "as MQTT.js sends them (4)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    results = [run(args.scenario, args.messages, args.protocol_level)
               for _ in range(args.repeat)]
    suffix = "_v5" if args.protocol_level == 5 else ""
    print(f"{args.scenario}{suffix}: {min(results):.2f} us per delivered message "
          f"(best of {args.repeat}: {', '.join(f'{r:.2f}' for r in results)})")


if __name__ == "__main__":
    main()
