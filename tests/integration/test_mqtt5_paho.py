"""paho-mqtt 2 with MQTTv5 against greenfly: request/response (response topic, correlation
data, response information), the will delay interval, and message expiry of queued and
retained messages. What a paho application sees, through `support.paho5`."""

from __future__ import annotations

import time

import pytest
from support.clients import TIMEOUT, unique
from support.paho5 import Paho5

SUCCESS = 0
GRACE = 1.0  # the broker's watchdog looks four times a second; a loaded machine is slower
LATE = 3.0  # how late a delayed will may come on a loaded machine (early is what matters)


@pytest.fixture
def paho5(broker):
    """Factory of connected paho MQTTv5 clients on the module's broker, closed afterwards."""
    made: list[Paho5] = []

    def make(client_id: str | None = None, port: int | None = None, clean_start: bool = True,
             will: tuple[str, bytes, dict] | None = None, **props: object) -> Paho5:
        client = Paho5(port or broker.port, client_id)
        if will is not None:
            client.will_set(will[0], will[1], 1, **will[2])
        made.append(client)
        connack = client.connect(clean_start, **props)
        assert connack[1] == SUCCESS, connack
        return client

    yield make
    for client in made:
        client.close()


# -- request / response -------------------------------------------------------------------------

def test_request_response_passes_response_topic_and_correlation_data_unchanged(paho5):
    service = f"rr/{unique()}"
    requester = paho5()
    responder = paho5()
    reply_to = f"{service}/reply/{requester.client_id}"
    assert requester.subscribe(reply_to, 1) == [1]
    assert responder.subscribe(f"{service}/request", 1) == [1]
    correlation = b"\x00req-42\xff"  # binary, not UTF-8: must come back byte for byte
    requester.publish(f"{service}/request", b"what time is it?", 1,
                      ResponseTopic=reply_to, CorrelationData=correlation,
                      UserProperty=[("trace", "t-1")])

    [request] = responder.expect(1)
    assert request.payload == b"what time is it?"
    assert request.properties.ResponseTopic == reply_to
    assert request.properties.CorrelationData == correlation
    assert request.properties.UserProperty == [("trace", "t-1")]
    # The responder answers on the topic it was given, echoing the correlation data.
    responder.publish(request.properties.ResponseTopic, b"noon", 1,
                      CorrelationData=request.properties.CorrelationData)

    [response] = requester.expect(1)
    assert response.topic == reply_to and response.payload == b"noon"
    assert response.properties.CorrelationData == correlation
    assert not hasattr(response.properties, "ResponseTopic")


def test_response_information_is_offered_only_when_configured(paho5, broker_factory):
    plain = paho5(RequestResponseInformation=1)
    assert not hasattr(plain.connack[2], "ResponseInformation")  # off by default

    port = broker_factory('[broker]\nresponse_information = "$response"\n').port
    asker = paho5(port=port, RequestResponseInformation=1)
    offered = asker.connack[2].ResponseInformation
    assert offered == f"$response/{asker.client_id}"
    # The offered prefix works as a response topic: subscribe to it, receive on it.
    reply_to = f"{offered}/answers"
    assert asker.subscribe(reply_to, 1) == [1]
    paho5(port=port).publish(reply_to, b"42", 1, CorrelationData=b"c-1")
    [answer] = asker.expect(1)
    assert answer.payload == b"42" and answer.properties.CorrelationData == b"c-1"
    not_asking = paho5(port=port)
    assert not hasattr(not_asking.connack[2], "ResponseInformation")  # only when asked


# -- will delay ---------------------------------------------------------------------------------

def test_will_with_delay_is_published_after_the_delay_not_at_the_drop(paho5):
    topic = f"will/{unique()}"
    watcher = paho5()
    assert watcher.subscribe(topic, 1) == [1]
    device = paho5(will=(topic, b"device lost", {"WillDelayInterval": 2}),
                   SessionExpiryInterval=10)
    dropped_at = time.monotonic()
    device.drop()
    [will] = watcher.expect(1, timeout=2 + TIMEOUT)
    waited = will.timestamp - dropped_at
    assert will.payload == b"device lost"
    assert 2 - 0.3 <= waited <= 2 + LATE, f"will published {waited:.2f} s after the drop"


def test_will_delay_is_bounded_by_the_session_expiry(paho5):
    topic = f"will/{unique()}"
    watcher = paho5()
    watcher.subscribe(topic, 1)
    device = paho5(will=(topic, b"session over", {"WillDelayInterval": 30}),
                   SessionExpiryInterval=2)
    dropped_at = time.monotonic()
    device.drop()
    [will] = watcher.expect(1, timeout=2 + TIMEOUT)
    waited = will.timestamp - dropped_at
    assert 2 - 0.3 <= waited <= 2 + LATE, f"will published {waited:.2f} s after the drop"


def test_reconnect_within_the_will_delay_cancels_the_will(paho5):
    topic = f"will/{unique()}"
    watcher = paho5()
    watcher.subscribe(f"{topic}/+", 1)
    delay = {"WillDelayInterval": 3}
    device_id = unique("returns")
    device = paho5(device_id, will=(f"{topic}/returns", b"should be cancelled", delay),
                   SessionExpiryInterval=10)
    # A second device dropped at the same moment and never back: its will marks the time
    # at which the first one's would have gone out.
    witness = paho5(will=(f"{topic}/witness", b"witness will", delay), SessionExpiryInterval=10)
    device.drop()
    witness.drop()
    back = paho5(device_id, clean_start=False, SessionExpiryInterval=10)
    assert back.connack[0], "the session should have been kept"
    [first] = watcher.expect(1, timeout=3 + TIMEOUT)
    assert first.topic == f"{topic}/witness"
    with pytest.raises(AssertionError):
        watcher.expect(1, timeout=GRACE)  # the cancelled will stays cancelled


# -- message expiry -----------------------------------------------------------------------------

def test_queued_message_expires_while_the_subscriber_is_away(paho5):
    topic = f"expiry/{unique()}"
    client_id = unique("away")
    subscriber = paho5(client_id, SessionExpiryInterval=300)
    assert subscriber.subscribe(topic, 1) == [1]
    subscriber.disconnect()
    publisher = paho5()
    publisher.publish(topic, b"short-lived", 1, MessageExpiryInterval=1)
    publisher.publish(topic, b"long-lived", 1, MessageExpiryInterval=60)
    published_at = time.monotonic()
    time.sleep(max(0.0, published_at + 2.0 - time.monotonic()))  # the first one's life, and more

    back = paho5(client_id, clean_start=False, SessionExpiryInterval=300)
    # Queued in order: had the expired one been delivered, it would have come first.
    [message] = back.expect(1)
    assert message.payload == b"long-lived"
    remaining = message.properties.MessageExpiryInterval
    assert 55 <= remaining <= 60, f"forwarded expiry {remaining}: should be what is left"


def test_retained_message_expires(paho5):
    base = f"expiry/retained/{unique()}"
    publisher = paho5()
    publisher.publish(f"{base}/short", b"short-lived", 1, retain=True, MessageExpiryInterval=1)
    publisher.publish(f"{base}/long", b"long-lived", 1, retain=True, MessageExpiryInterval=60)
    published_at = time.monotonic()
    time.sleep(max(0.0, published_at + 2.0 - time.monotonic()))
    subscriber = paho5()
    subscriber.subscribe(f"{base}/+", 1)
    # Retained messages go out with the SUBACK; a message published after it comes behind.
    publisher.publish(f"{base}/marker", b"marker", 1)
    messages = subscriber.expect(2)
    assert [m.payload for m in messages] == [b"long-lived", b"marker"]
    assert messages[0].retain
    assert messages[0].properties.MessageExpiryInterval <= 60
    for topic in (f"{base}/short", f"{base}/long"):
        publisher.publish(topic, b"", 1, retain=True)

