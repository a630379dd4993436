"""The journal's promise: what the broker acknowledged survives `kill -9` and a restart.

Every test kills the broker with SIGKILL right after the last acknowledgement arrives (no
sleep in between) and restarts it on the same data dir and port.
"""

from __future__ import annotations

import time

import pytest
from support.clients import RawClient, publish_many, receive_all, unique

from broker.codec import ConnAck, PubComp, Publish, PubRec, PubRel, SubOptions, Subscribe


def _persistent_subscriber(port: int, client_id: str, topic_filter: str, qos: int = 1) -> None:
    raw = RawClient(port)
    assert raw.connect(client_id, clean=False) == ConnAck(0, False)
    raw.send_packet(Subscribe(1, ((topic_filter, SubOptions(qos)),)))
    assert raw.recv_packet().reason_codes == (qos,)
    raw.close()


@pytest.mark.parametrize("fsync", ["always", "interval", "never"])
def test_1000_acknowledged_qos1_messages_for_an_offline_session_survive_kill_9(broker_factory,
                                                                               fsync):
    # Every policy survives a crash of the process; they differ only on a power cut.
    proc = broker_factory(f'[persistence]\nfsync = "{fsync}"\n')
    client_id = unique("offline")
    topic = f"{client_id}/data"
    _persistent_subscriber(proc.port, client_id, topic)
    payloads = [b"%04d" % i for i in range(1000)]
    publisher = RawClient(proc.port)
    publisher.connect(unique("pub"))
    publish_many(publisher, topic, payloads)
    proc.kill9()  # straight after the 1000th PUBACK
    proc.start()
    device = RawClient(proc.port)
    assert device.connect(client_id, clean=False) == ConnAck(0, True)
    got = receive_all(device, 1000)
    distinct = list(dict.fromkeys(p.payload for p in got))
    assert distinct == payloads  # none missing, in order
    assert len(got) - len(distinct) == 0, f"{len(got) - len(distinct)} duplicates"


def test_100_retained_topics_survive_kill_9_and_a_cleared_one_stays_cleared(broker_factory):
    proc = broker_factory()
    prefix = unique("retained")
    publisher = RawClient(proc.port)
    publisher.connect()
    for i in range(100):
        publish_many(publisher, f"{prefix}/{i}", [b"value %d" % i], first_id=i + 1, retain=True)
    publish_many(publisher, f"{prefix}/7", [b""], first_id=500, retain=True)  # clears topic 7
    proc.kill9()
    proc.start()
    reader = RawClient(proc.port)
    reader.connect()
    reader.send_packet(Subscribe(1, ((f"{prefix}/#", SubOptions(1)),)))
    assert reader.recv_packet().reason_codes == (1,)
    got = receive_all(reader, 99, linger=0.5)
    assert sorted((p.topic, p.payload, p.retain) for p in got) == sorted(
        (f"{prefix}/{i}", b"value %d" % i, True) for i in range(100) if i != 7)


def test_acknowledged_subscription_survives_kill_9(broker_factory):
    proc = broker_factory()
    client_id = unique("sub")
    topic = f"{client_id}/t"
    raw = RawClient(proc.port)
    raw.connect(client_id, clean=False)
    raw.send_packet(Subscribe(1, ((topic, SubOptions(1)),)))
    assert raw.recv_packet().reason_codes == (1,)
    proc.kill9()  # straight after SUBACK
    proc.start()
    again = RawClient(proc.port)
    assert again.connect(client_id, clean=False) == ConnAck(0, True)
    publisher = RawClient(proc.port)
    publisher.connect()
    publish_many(publisher, topic, [b"after restart"])
    [message] = receive_all(again, 1)
    assert message.payload == b"after restart"


def test_inbound_qos2_pubrel_after_restart_delivers_exactly_once(broker_factory):
    proc = broker_factory()
    sub_id = unique("q2sub")
    topic = f"{sub_id}/t"
    _persistent_subscriber(proc.port, sub_id, topic, qos=2)
    pub_id = unique("q2pub")
    publisher = RawClient(proc.port)
    publisher.connect(pub_id, clean=False)
    publisher.send_packet(Publish(topic, b"exactly once", qos=2, packet_id=11))
    assert publisher.recv_packet() == PubRec(11)
    proc.kill9()  # straight after PUBREC
    proc.start()
    publisher = RawClient(proc.port)
    assert publisher.connect(pub_id, clean=False) == ConnAck(0, True)
    # The client, as the spec says, resends what it owes: the PUBLISH (DUP) if unsure, then
    # PUBREL. Neither may deliver the message a second time.
    publisher.send_packet(Publish(topic, b"exactly once", qos=2, dup=True, packet_id=11))
    assert publisher.recv_packet() == PubRec(11)
    publisher.send_packet(PubRel(11))
    assert publisher.recv_packet() == PubComp(11)
    device = RawClient(proc.port)
    assert device.connect(sub_id, clean=False) == ConnAck(0, True)
    got = receive_all(device, 1, linger=0.7)
    assert [p.payload for p in got] == [b"exactly once"]


def test_inflight_messages_to_an_online_subscriber_are_redelivered_with_dup(broker_factory):
    proc = broker_factory()
    client_id = unique("online")
    raw = RawClient(proc.port)
    raw.connect(client_id, clean=False)
    raw.send_packet(Subscribe(1, ((f"{client_id}/q1", SubOptions(1)),
                                  (f"{client_id}/q2", SubOptions(2)))))
    assert raw.recv_packet().reason_codes == (1, 2)
    publisher = RawClient(proc.port)
    publisher.connect()
    publish_many(publisher, f"{client_id}/q1", [b"one"])
    publisher.send_packet(Publish(f"{client_id}/q2", b"two", qos=2, packet_id=2))
    assert publisher.recv_packet() == PubRec(2)
    first = [raw.recv_packet(), raw.recv_packet()]  # received, never acknowledged
    assert sorted(p.payload for p in first) == [b"one", b"two"]
    proc.kill9()
    proc.start()
    again = RawClient(proc.port)
    assert again.connect(client_id, clean=False) == ConnAck(0, True)
    resent = [again.recv_packet(), again.recv_packet()]
    assert sorted((p.payload, p.qos, p.dup) for p in resent) == [(b"one", 1, True),
                                                                (b"two", 2, True)]
    assert {p.packet_id for p in resent} == {p.packet_id for p in first}


def test_kill_9_during_compaction_recovers_everything(broker_factory):
    # Compaction starts once the journal passes 1 MiB and then at every 1.5x growth; 4,000
    # messages of 1 KiB queued for an offline session make the last one start while the last
    # thousand are being acknowledged, and the kill lands as soon as it has started.
    proc = broker_factory("[persistence]\ncompact_min_mb = 1\ncompact_factor = 1.5\n"
                          "[limits]\nmax_queued_messages = 0\n")
    client_id = unique("compact")
    topic = f"{client_id}/t"
    _persistent_subscriber(proc.port, client_id, topic)
    payloads = [b"%05d" % i + b"x" * 1019 for i in range(4000)]
    publisher = RawClient(proc.port)
    publisher.connect()
    publish_many(publisher, topic, payloads[:3000])
    proc.mark_log()
    publisher_late = RawClient(proc.port)
    publisher_late.connect()
    publish_many(publisher_late, topic, payloads[3000:], window=1000)
    proc.wait_for_log(r"compacting ")
    proc.kill9()  # as soon as a compaction has started, whether or not it finished
    proc.start()
    proc.wait_for_log(r"journal .*records")
    device = RawClient(proc.port)
    assert device.connect(client_id, clean=False) == ConnAck(0, True)
    got = receive_all(device, 4000, timeout=60)
    assert list(dict.fromkeys(p.payload for p in got)) == payloads


def test_full_disk_stops_acknowledging_qos1_keeps_qos0_and_resumes(broker_factory):
    import os
    import resource

    from support.clients import PahoClient

    proc = broker_factory()
    client_id = unique("diskfull")
    topic = f"{client_id}/t"
    _persistent_subscriber(proc.port, client_id, topic)
    publisher = RawClient(proc.port)
    publisher.connect()
    publish_many(publisher, topic, [b"before %d" % i for i in range(10)])
    journal = proc.data_dir / "greenfly.journal"
    limit = os.path.getsize(journal) + 3000
    # Only the soft limit: lowering the hard one could not be undone without privileges.
    resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
    proc.mark_log()
    refused_at = None
    for i in range(20):  # 1 KiB each: the limit is reached within three or four
        publisher.send_packet(Publish(topic, b"during %d " % i + b"x" * 1024, 1, packet_id=100 + i))
        try:
            publisher.recv_packet(timeout=3)
        except (ConnectionError, TimeoutError):
            refused_at = i
            break
    assert refused_at is not None, "every publish was acknowledged past the file-size limit"
    assert publisher.closed_by_broker(1)
    proc.wait_for_log(r"JOURNAL WRITE FAILED: .*File too large")
    # QoS 0 and subscriptions keep working meanwhile.
    chat = PahoClient(proc.port)
    chat.connect()
    chat.subscribe(f"{topic}/chat", 0)
    chat.publish(f"{topic}/chat", b"qos 0 still flows", qos=0)
    assert chat.expect(1)[0].payload == b"qos 0 still flows"
    # A new QoS 1 publish is refused (no PUBACK) while the journal cannot be written.
    second = RawClient(proc.port)
    second.connect()
    second.send_packet(Publish(topic, b"refused", 1, packet_id=1))
    assert second.closed_by_broker(3)
    assert second.decoder.next_packet() is None
    # The disk has room again: writes resume and acknowledgements come back.
    resource.prlimit(proc.pid, resource.RLIMIT_FSIZE,
                     (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    proc.wait_for_log(r"journal writes work again")
    third = RawClient(proc.port)
    third.connect()
    publish_many(third, topic, [b"after"])
    chat.disconnect()
    proc.restart()
    device = RawClient(proc.port)
    assert device.connect(client_id, clean=False) == ConnAck(0, True)
    got = [p.payload for p in receive_all(device, 11, linger=1.0)]
    acknowledged = [b"before %d" % i for i in range(10)] + [b"after"]
    assert [p for p in got if p in acknowledged] == acknowledged


def test_clean_sessions_write_nothing_to_the_journal(broker_factory):
    proc = broker_factory()
    journal = proc.data_dir / "greenfly.journal"
    before = journal.stat().st_size
    sub = RawClient(proc.port)
    sub.connect(unique("clean-sub"), clean=True)
    sub.send_packet(Subscribe(1, (("clean/#", SubOptions(1)),)))
    assert sub.recv_packet().reason_codes == (1,)
    pub = RawClient(proc.port)
    pub.connect(unique("clean-pub"), clean=True)
    publish_many(pub, "clean/t", [b"%d" % i for i in range(50)])
    assert len(receive_all(sub, 50)) == 50
    assert journal.stat().st_size == before  # not one record


@pytest.mark.slow
def test_session_expiry_counts_from_the_disconnect_across_a_restart(broker_factory):
    proc = broker_factory("[broker]\npersistent_client_expiration = 3\n")
    client_id = unique("expires")
    raw = RawClient(proc.port)
    raw.connect(client_id, clean=False)
    closing = time.monotonic()  # the broker's disconnect time is between these two
    raw.close()
    proc.wait_for_log(rf"client disconnected: {client_id} ")
    disconnected = time.monotonic()
    time.sleep(2.0)  # the broker dies 2 s into the session's 3 s
    proc.kill9()
    proc.start()
    up = time.monotonic()
    proc.wait_for_log(rf"expired 1 persistent session\(s\): {client_id}", timeout=15)
    expired = time.monotonic()
    # At the first sweep (every 0.75 s) from 3 s after the disconnect or from the restart,
    # whichever is later; counted from the restart it would be 3 s after `up` at least, so
    # the bound between the two leaves a loaded machine 0.75 s on either side.
    assert expired - closing >= 3.0, expired - closing
    assert expired < max(disconnected + 3.0, up) + 1.5, (expired - disconnected, up - disconnected)
    again = RawClient(proc.port)
    assert again.connect(client_id, clean=False) == ConnAck(0, False)
