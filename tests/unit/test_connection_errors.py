"""The connection's handler of last resort: an error that is neither MQTT's nor the network's
ends that one connection, once, with its traceback in the log (not on stderr)."""

from __future__ import annotations

import logging

import pytest

from broker.config.loading import load_text
from broker.core.context import BrokerContext
from broker.errors import ReasonCode
from broker.link.connection import Connection
from broker.store.memory import MemoryStore


class BrokenTransport:
    """A transport whose read fails in a way no transport should (a bug, say)."""

    address = "127.0.0.1:4242"
    unbuffered = False
    unsent = False

    def __init__(self) -> None:
        self.closed_with: list[int] = []

    def recv(self, idle: object = None) -> bytes:
        raise LookupError("a bug in the transport")

    def sendall(self, data: bytes) -> None:
        pass

    def try_send(self, data: bytes) -> bool:
        return True

    def linger_close(self, reason_code: int = 0) -> None:
        self.close(reason_code)

    def close(self, reason_code: int = 0) -> None:
        self.closed_with.append(reason_code)


@pytest.fixture
def ctx() -> BrokerContext:
    return BrokerContext.build(load_text("[persistence]\nenabled = false\n", "test"),
                               MemoryStore())


def test_unexpected_error_closes_once_and_logs_the_traceback(ctx, caplog):
    transport = BrokenTransport()
    closed: list[Connection] = []
    connection = Connection(ctx, transport, on_closed=closed.append)
    with caplog.at_level(logging.ERROR, logger="greenfly.connection"):
        connection.run()  # returns: nothing escapes to gevent (which would print to stderr)
    assert closed == [connection]  # the listener's place is given back exactly once
    assert transport.closed_with == [ReasonCode.IMPLEMENTATION_SPECIFIC_ERROR]
    assert connection.closed.text == "unexpected error: LookupError"
    [record] = caplog.records
    assert record.getMessage() == \
        "closing (no client id yet) from 127.0.0.1:4242: unexpected error"
    assert record.exc_info[0] is LookupError  # the traceback goes with the log line
