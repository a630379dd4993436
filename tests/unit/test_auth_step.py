"""CONNECT's credentials are a step the protocol asks for and its caller performs: the
state machine never waits, and packets behind a CONNECT wait for its verdict."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from support.recording_peer import RecordingPeer

from broker.codec import ConnAck, Connect, PingReq, SubAck, SubOptions, Subscribe, encode
from broker.config.loading import load_text
from broker.core.context import BrokerContext
from broker.core.protocol import (
    AWAIT_AUTH,
    CLOSED,
    CONNECTED,
    PEER_CLOSED,
    AuthRequest,
    AuthResult,
    ClientProtocol,
)
from broker.errors import ReasonCode
from broker.link.connection import Connection
from broker.store.memory import MemoryStore


class Security:
    """A listener's security whose verdicts the test chooses (and whose calls it sees)."""

    def __init__(self, verdict: AuthResult, during: Any = None) -> None:
        self.verdict = verdict
        self.during = during  # called inside authenticate, as if time passed meanwhile
        self.requests: list[AuthRequest] = []

    def authenticate(self, request: AuthRequest,
                     still_wanted: Callable[[], bool] | None = None) -> AuthResult:
        self.requests.append(request)
        if self.during is not None:
            self.during()
        return self.verdict

    def rules(self, client_id: str, username: str | None) -> None:
        return None


class Listener:
    def __init__(self, security: Security) -> None:
        self.security = security


OK = AuthResult(ReasonCode.SUCCESS, "alice")
WRONG = AuthResult(ReasonCode.BAD_USER_NAME_OR_PASSWORD, "alice", "wrong password")


@pytest.fixture
def ctx() -> BrokerContext:
    return BrokerContext.build(load_text("[persistence]\nenabled = false\n", "test"),
                               MemoryStore())


def connect_packet(client_id: str = "dev-1") -> Connect:
    return Connect(client_id, username="alice", password=b"s3cret", keepalive=30)


def test_connect_asks_for_a_check_and_answers_only_with_the_verdict(ctx):
    peer = RecordingPeer()
    protocol = ClientProtocol(ctx, peer, "[::1]:5000", Listener(Security(OK)), identity="cn")
    request = protocol.handle(connect_packet())
    assert request == AuthRequest("alice", b"s3cret", "::1", "cn")
    assert "s3cret" not in repr(request)  # a request in a log line shows no password
    assert protocol.state is AWAIT_AUTH and peer.items == []
    assert ctx.registry.get("dev-1") is None
    protocol.authenticated(OK)
    assert protocol.state is CONNECTED
    assert peer.items == [ConnAck(ReasonCode.SUCCESS, False)]
    assert protocol.username == "alice" and ctx.registry.get("dev-1") is not None


def test_a_refusing_verdict_answers_with_its_code_and_closes(ctx):
    peer = RecordingPeer()
    protocol = ClientProtocol(ctx, peer, "127.0.0.1:5000", Listener(Security(WRONG)))
    protocol.authenticated(protocol.source.security.authenticate(
        protocol.handle(connect_packet())))
    assert peer.items == [ConnAck(ReasonCode.BAD_USER_NAME_OR_PASSWORD, False)]
    assert protocol.state is CLOSED
    assert protocol.close_after_flush.text == "connection refused: user=alice wrong password"
    assert ctx.registry.get("dev-1") is None


def test_refusals_that_need_no_credentials_ask_for_no_check(ctx):
    peer = RecordingPeer()
    protocol = ClientProtocol(ctx, peer, "127.0.0.1:5000")
    assert protocol.handle(Connect("", clean_start=False)) is None
    assert peer.items == [ConnAck(ReasonCode.CLIENT_IDENTIFIER_NOT_VALID, False)]


def test_a_packet_before_the_verdict_is_the_callers_bug(ctx):
    protocol = ClientProtocol(ctx, RecordingPeer(), "127.0.0.1:5000")
    protocol.handle(connect_packet())
    with pytest.raises(RuntimeError, match="before the CONNECT's verdict"):
        protocol.handle(PingReq())


def test_a_verdict_after_the_connection_was_lost_is_refused_and_changes_nothing(ctx):
    peer = RecordingPeer()
    protocol = ClientProtocol(ctx, peer, "127.0.0.1:5000")
    protocol.handle(connect_packet())
    protocol.connection_lost(PEER_CLOSED)
    with pytest.raises(RuntimeError, match="no CONNECT awaits one"):
        protocol.authenticated(OK)
    assert peer.items == [] and ctx.registry.get("dev-1") is None


class OneRead:
    """A transport that delivers one chunk of bytes, then the end of the stream."""

    address = "127.0.0.1:6000"
    unbuffered = False
    unsent = False

    def __init__(self, data: bytes) -> None:
        self.chunks = [data, b""]
        self.sent: list[bytes] = []
        self.closed = False

    def recv(self, idle: object = None) -> bytes:
        return self.chunks.pop(0)

    def sendall(self, data: bytes) -> None:
        self.sent.append(data)

    def try_send(self, data: bytes) -> bool:
        self.sent.append(data)
        return True

    def linger_close(self, reason_code: int = 0) -> None:
        self.close(reason_code)

    def close(self, reason_code: int = 0) -> None:
        self.closed = True


class HeldFlush:
    """Stands in for the hub's end-of-iteration flush, and flushes nothing: what the
    connection wrote stays in its outbox, in order, for the test to read."""

    def add(self, outbox: object) -> None:
        pass

    def flush_now(self) -> None:
        pass


def test_packets_pipelined_behind_connect_are_handled_after_its_verdict(ctx):
    subscribe = Subscribe(7, (("a/b", SubOptions(1)),))
    transport = OneRead(encode(connect_packet()) + encode(subscribe))
    security = Security(OK)
    at_close: list[list[Any]] = []  # a close without flush drops what the outbox holds
    connection = Connection(ctx, transport, Listener(security), flusher=HeldFlush(),
                            on_closed=lambda c: at_close.append(list(c.outbox.items)))
    outbox = connection.outbox
    at_check: list[list[Any]] = []
    security.during = lambda: at_check.append(list(outbox.items))
    connection.run()
    assert at_check == [[]]  # while checking: no answer yet, the SUBSCRIBE still waiting
    assert at_close == [[ConnAck(ReasonCode.SUCCESS, False), SubAck(7, (1,))]]
    assert connection.closed is PEER_CLOSED  # then the stream ended


def test_a_connection_closed_during_the_check_gets_no_connack_and_no_session(ctx, caplog):
    transport = OneRead(encode(connect_packet()) + encode(PingReq()))
    security = Security(OK)
    closed: list[Connection] = []
    connection = Connection(ctx, transport, Listener(security), on_closed=closed.append,
                            flusher=HeldFlush())
    # The watchdog's connect_timeout (or a shutdown) strikes while the hash is computed.
    security.during = lambda: connection.terminate(PEER_CLOSED)
    connection.run()
    assert len(security.requests) == 1 and closed == [connection]
    assert connection.outbox.items == [] and transport.sent == []
    assert ctx.registry.get("dev-1") is None
    assert connection.protocol.state is CLOSED
    assert [r for r in caplog.records if r.levelname == "ERROR"] == []
