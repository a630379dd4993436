"""`/healthz` and `/readyz` on the http listener: ready only while the journal takes writes."""

from __future__ import annotations

import os
import resource

from support.clients import PahoClient, RawClient, publish_many, unique
from support.http import HTTP_LISTENER, request

from broker.codec import Publish


def test_healthz_is_200_and_readyz_names_the_listeners(broker_factory):
    broker = broker_factory(HTTP_LISTENER)
    base = f"http://127.0.0.1:{broker.port_of('http')}"
    assert request(f"{base}/healthz").json() == {"status": "alive"}
    ready = request(f"{base}/readyz")
    assert ready.status == 200
    assert ready.json() == {"status": "ready", "listeners": [f"mqtt://127.0.0.1:{broker.port}"]}


def test_readyz_is_503_while_the_disk_is_full_and_200_after(broker_factory):
    broker = broker_factory(HTTP_LISTENER)
    base = f"http://127.0.0.1:{broker.port_of('http')}"
    client_id = unique("ready")
    topic = f"{client_id}/t"
    subscriber = PahoClient(broker.port, client_id=client_id, clean_session=False)
    subscriber.connect()
    subscriber.subscribe(topic, 1)
    subscriber.disconnect()  # offline: every QoS 1 message to it is written to the journal
    publisher = RawClient(broker.port)
    publisher.connect()
    limit = os.path.getsize(broker.data_dir / "greenfly.journal") + 3000
    # Only the soft limit: lowering the hard one could not be undone without privileges.
    resource.prlimit(broker.pid, resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
    try:
        for i in range(20):  # 1 KiB each: the limit is reached within three or four
            publisher.send_packet(Publish(topic, b"x" * 1024, 1, packet_id=1 + i))
            try:
                publisher.recv_packet(timeout=3)
            except (ConnectionError, TimeoutError):
                break
        broker.wait_for_log(r"JOURNAL WRITE FAILED")
        during = request(f"{base}/readyz")
        assert during.status == 503
        assert during.json()["status"] == "not ready"
        assert any("journal cannot be written" in reason and "File too large" in reason
                   for reason in during.json()["reasons"])
        assert request(f"{base}/healthz").status == 200  # alive all the same
    finally:
        resource.prlimit(broker.pid, resource.RLIMIT_FSIZE,
                         (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    broker.wait_for_log(r"journal writes work again")
    assert request(f"{base}/readyz").status == 200
    again = RawClient(broker.port)
    again.connect()
    publish_many(again, topic, [b"after"])
