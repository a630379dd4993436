"""Many retained messages for one new subscription: every one is sent, at the pace the client
reads, none dropped (Mosquitto sends them all too); also at QoS 1, past the in-flight window
and `max_queued_messages`."""

from __future__ import annotations

import time

from support.clients import RawClient, receive_all, unique

from broker.codec import PingReq, PingResp, Publish, encode

NO_PERSISTENCE = "[persistence]\nenabled = false\n"


def retain_many(port: int, prefix: str, count: int, qos: int = 0) -> None:
    """`count` retained messages, one per topic; returns once the broker handled them all."""
    pub = RawClient(port)
    pub.connect()
    batch = []
    for i in range(count):
        packet_id = i % 65_535 + 1 if qos else None
        batch.append(encode(Publish(f"{prefix}/{i}", b"v%d" % i, qos, True, packet_id=packet_id)))
        if len(batch) == 1000:
            pub.send(b"".join(batch))
            batch = []
    pub.send(b"".join(batch) + encode(PingReq()))
    while not isinstance(pub.recv_packet(timeout=60), PingResp):
        pass  # the PUBACKs of a QoS 1 burst
    pub.close()


def test_a_wildcard_subscriber_gets_all_50000_retained_messages(broker_factory):
    proc = broker_factory(NO_PERSISTENCE)
    prefix = unique("fleet")
    retain_many(proc.port, prefix, 50_000)
    sub = RawClient(proc.port)
    sub.connect()
    started = time.monotonic()
    sub.subscribe(f"{prefix}/#", 0)
    topics = set()
    while len(topics) < 50_000:
        try:
            packet = sub.recv_packet(timeout=10)
        except TimeoutError:
            raise AssertionError(f"{len(topics)} of 50,000 retained messages came") from None
        assert isinstance(packet, Publish) and packet.retain, packet
        topics.add(packet.topic)
    took = time.monotonic() - started
    assert "reads too slowly" not in proc.log_text() and "dropped" not in proc.log_text()
    print(f"50,000 retained messages in {took:.2f}s")
    sub.close()


def test_retained_qos1_messages_beyond_window_and_queue_all_arrive(broker_factory):
    proc = broker_factory(NO_PERSISTENCE + "[limits]\nmax_inflight_messages = 10\n"
                          "max_queued_messages = 100\n")
    prefix = unique("fleet")
    retain_many(proc.port, prefix, 3000, qos=1)
    sub = RawClient(proc.port)
    sub.connect()
    sub.subscribe(f"{prefix}/#", 1)
    got = receive_all(sub, 3000, timeout=30)
    assert len({p.topic for p in got}) == 3000 and all(p.retain and p.qos == 1 for p in got)
    assert "dropped" not in proc.log_text()
    sub.close()
