"""Persistent sessions (clean session 0): subscriptions and QoS 1/2 messages kept while the
client is offline; the limits that bound them, and the drops they cause (counted, logged)."""

from __future__ import annotations

from support.clients import PahoClient, RawClient, expect_marker, unique

from broker.codec import ConnAck, PubAck


def test_offline_qos1_and_qos2_messages_are_delivered_on_reconnect_qos0_is_not(broker):
    client_id = unique("device")
    topic = f"{client_id}/cmd"
    device = PahoClient(broker.port, client_id, clean_session=False)
    device.connect()
    device.subscribe(topic, 2)
    device.disconnect()
    pub = PahoClient(broker.port)
    pub.connect()
    pub.publish(topic, b"q0 while away", qos=0)
    pub.publish(topic, b"q1 while away", qos=1)
    pub.publish(topic, b"q2 while away", qos=2)
    device = PahoClient(broker.port, client_id, clean_session=False)
    assert device.connect() == (True, 0)
    got = device.expect(2)
    assert [(m.payload, m.qos) for m in got] == [(b"q1 while away", 1), (b"q2 while away", 2)]
    # the subscription itself survived too, and the QoS 0 message was not queued before it
    pub.publish(topic, b"live", qos=1)
    assert device.expect(1)[0].payload == b"live"
    device.disconnect()
    pub.disconnect()


def test_clean_session_discards_subscriptions_at_disconnect(broker):
    client_id = unique("cleaner")
    topic = f"{client_id}/t"
    client = PahoClient(broker.port, client_id, clean_session=True)
    client.connect()
    client.subscribe(topic, 1)
    client.disconnect()
    pub = PahoClient(broker.port)
    pub.connect()
    pub.publish(topic, b"lost by design", qos=1)
    again = PahoClient(broker.port, client_id, clean_session=False)
    assert again.connect() == (False, 0)
    again.subscribe(f"{topic}/marker", 1)
    expect_marker(again, pub, f"{topic}/marker")  # a kept session would send its message first
    again.disconnect()
    pub.disconnect()


def test_inflight_window_holds_back_messages_until_acknowledged(broker_factory):
    proc = broker_factory("[limits]\nmax_inflight_messages = 2\n")
    client_id = unique("window")
    topic = f"{client_id}/t"
    sub = RawClient(proc.port)
    sub.connect(client_id, clean=False)
    sub.subscribe(topic, qos=1)
    pub = PahoClient(proc.port)
    pub.connect()
    for i in range(5):
        pub.publish(topic, b"%d" % i, qos=1)
    first = [sub.recv_packet() for _ in range(2)]
    assert [p.payload for p in first] == [b"0", b"1"]
    # QoS 0 is not held back by the window: the marker overtakes "2", which waits for room.
    pub.publish(topic, b"qos 0 marker", qos=0)
    marker = sub.recv_packet()
    assert (marker.payload, marker.qos) == (b"qos 0 marker", 0)  # the window of 2 is full
    sub.send_packet(PubAck(first[0].packet_id))
    assert sub.recv_packet().payload == b"2"
    sub.send_packet(PubAck(first[1].packet_id))
    assert sub.recv_packet().payload == b"3"
    pub.disconnect()


def test_max_queued_messages_keeps_the_oldest_and_counts_and_logs_drops(broker_factory):
    proc = broker_factory("[limits]\nmax_queued_messages = 5\nmax_inflight_messages = 20\n",
                          sys_interval=1)
    client_id = unique("slowpoke")
    topic = f"{client_id}/t"
    device = PahoClient(proc.port, client_id, clean_session=False)
    device.connect()
    device.subscribe(topic, 1)
    device.disconnect()
    pub = PahoClient(proc.port)
    pub.connect()
    for i in range(10):
        pub.publish(topic, b"%d" % i, qos=1)
    proc.wait_for_log(rf"client {client_id}: dropped 1 message\(s\).*max_queued_messages \(5\)")
    device = PahoClient(proc.port, client_id, clean_session=False)
    assert device.connect() == (True, 0)
    assert [m.payload for m in device.expect(5)] == [b"0", b"1", b"2", b"3", b"4"]
    expect_marker(device, pub, topic)  # and not one of the dropped five
    device.disconnect()
    pub.disconnect()
    watcher = PahoClient(proc.port)
    watcher.connect()
    watcher.subscribe("$SYS/broker/publish/messages/dropped", 0)
    values = [m.payload for m in watcher.expect(1)]
    while values[-1] != b"5":  # the retained value first, then updates every second
        values += [m.payload for m in watcher.expect(1, timeout=3)]
    watcher.disconnect()


def test_max_queued_bytes_bounds_the_queue_by_payload_size(broker_factory):
    proc = broker_factory("[limits]\nmax_queued_bytes = 250\n")
    client_id = unique("bytes")
    topic = f"{client_id}/t"
    device = PahoClient(proc.port, client_id, clean_session=False)
    device.connect()
    device.subscribe(topic, 1)
    device.disconnect()
    pub = PahoClient(proc.port)
    pub.connect()
    for i in range(4):
        pub.publish(topic, bytes([48 + i]) * 100, qos=1)
    proc.wait_for_log(rf"client {client_id}: dropped .*max_queued_bytes \(250\)")
    device = PahoClient(proc.port, client_id, clean_session=False)
    device.connect()
    assert [m.payload[:1] for m in device.expect(2)] == [b"0", b"1"]
    expect_marker(device, pub, topic)
    device.disconnect()
    pub.disconnect()


def test_persistent_session_expires_after_persistent_client_expiration(broker_factory):
    proc = broker_factory("[broker]\npersistent_client_expiration = 1\n")
    client_id = unique("expiring")
    device = RawClient(proc.port)
    assert device.connect(client_id, clean=False) == ConnAck(0, False)
    device.close()
    proc.wait_for_log(rf"expired 1 persistent session\(s\): {client_id}", timeout=10)
    again = RawClient(proc.port)
    assert again.connect(client_id, clean=False) == ConnAck(0, False)

