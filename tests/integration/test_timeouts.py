"""Keepalive [MQTT-3.1.2-24] and the CONNECT deadline, measured against configured intervals.

Each test waits for the close itself (up to 10 s) and then checks when it came: never before
the configured limit, and before the next wrong answer (twice the keepalive; the default
connect_timeout of 10 s), with room for a loaded machine in between.
"""

from __future__ import annotations

import time

import pytest
from support.clients import RawClient, unique

from broker.codec import ConnAck, PingReq, PingResp


def _time_until_closed(raw: RawClient, limit: float) -> float:
    start = time.monotonic()
    assert raw.closed_by_broker(limit), f"still open after {limit}s"
    return time.monotonic() - start


@pytest.mark.slow
def test_silent_client_is_closed_after_1_5_keepalive_not_2(broker):
    broker.mark_log()
    raw = RawClient(broker.port)
    client_id = unique("silent")
    assert raw.connect(client_id, keepalive=2) == ConnAck(0, False)
    elapsed = _time_until_closed(raw, 10)
    assert 3.0 <= elapsed < 4.0, elapsed
    broker.wait_for_log(rf"client disconnected: {client_id} .*reason=keepalive timeout")


@pytest.mark.slow
def test_pinging_client_stays_connected(broker):
    raw = RawClient(broker.port)
    assert raw.connect(unique("pinger"), keepalive=1) == ConnAck(0, False)
    for _ in range(6):  # 3 s: twice the 1.5 s limit
        time.sleep(0.5)
        raw.send_packet(PingReq())
        assert raw.recv_packet() == PingResp()


def test_keepalive_0_disables_the_timeout(broker):
    raw = RawClient(broker.port)
    assert raw.connect(unique("forever"), keepalive=0) == ConnAck(0, False)
    assert not raw.closed_by_broker(2.0)
    raw.send_packet(PingReq())
    assert raw.recv_packet() == PingResp()


@pytest.fixture(scope="module")
def quick_broker(tmp_path_factory):
    from support.broker import BrokerProcess
    proc = BrokerProcess(tmp_path_factory.mktemp("quick"), "[broker]\nconnect_timeout = 1\n")
    proc.start()
    yield proc
    proc.stop()


def test_socket_without_connect_is_closed_after_connect_timeout(quick_broker):
    raw = RawClient(quick_broker.port)
    elapsed = _time_until_closed(raw, 10)
    assert 1.0 <= elapsed < 5, elapsed
    quick_broker.wait_for_log(r"no CONNECT within 1s")


def test_half_sent_connect_is_closed_after_connect_timeout(quick_broker):
    raw = RawClient(quick_broker.port)
    raw.send(bytes.fromhex("101300044d515454"))  # a CONNECT that stops half-way
    elapsed = _time_until_closed(raw, 10)
    assert 1.0 <= elapsed < 5, elapsed


def test_huge_declared_length_before_connect_is_refused_at_once(broker):
    broker.mark_log()
    raw = RawClient(broker.port)
    raw.send(bytes.fromhex("10ffffff7f"))  # CONNECT declaring 268,435,455 bytes
    elapsed = _time_until_closed(raw, 10)
    assert elapsed < 5, elapsed  # not after waiting for the bytes until connect_timeout (10 s)
    broker.wait_for_log(r"packet of 268435460 bytes exceeds the limit of 524288 bytes")
    assert RawClient(broker.port).connect(unique()) == ConnAck(0, False)
