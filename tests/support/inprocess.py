"""The broker's state layer in one process, without sockets: real `Connection`s (protocol,
session, router, registry, outbox) writing to fake transports, flushed by hand.

Used by the state-layer unit tests (tests/unit/test_state_*.py) and by bench/pipeline.py.
What a test sees is what a client would: the bytes each connection wrote, decoded with the
codec's client-side `FrameDecoder`. What a test sends goes in as bytes too, through the
connection's own decoder, handled as `Connection._read` handles a read (minus the socket):
packet by packet, the CONNECT's credentials checked through the listener's authority, a
close the protocol asks for carried out after the last bytes are written.

The outbox flushes at the end of the hub's loop iteration in production; here `ManualFlush`
collects the outboxes that were filled and `flush_now()` writes them, which every read of
what a client received does first. Nothing here yields to the gevent hub.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from broker.codec import MQTT_3_1_1, ConnAck, Connect, FrameDecoder, Packet, encode
from broker.config.loading import load_text
from broker.core.context import BrokerContext
from broker.core.protocol import (
    AWAIT_CONNECT,
    PEER_CLOSED,
    Authority,
    AuthRequest,
    AuthResult,
    CloseReason,
    OpenAuthority,
)
from broker.errors import MQTTError
from broker.link.connection import Connection, refuse_unless_connect
from broker.store.base import SessionStore
from broker.store.memory import MemoryStore

NO_PERSISTENCE = "[persistence]\nenabled = false\n"


class ManualFlush:
    """Stands in for the hub's end-of-iteration `Flusher`: remembers the outboxes filled since
    the last `flush_now()` and writes them then."""

    def __init__(self) -> None:
        self.dirty: list[Any] = []

    def add(self, outbox: Any) -> None:
        self.dirty.append(outbox)

    def flush_now(self) -> None:
        dirty, self.dirty = self.dirty, []
        for outbox in dirty:
            outbox.flush()


class FakeTransport:
    """All of `broker.net.transport.Transport`, in memory: `try_send` always takes everything
    (a socket that keeps up); the bytes are kept in `data` unless `keep` is false (the bench
    counts them only). It holds no bytes of its own and has no descriptor, so a connection on
    it never parks; nothing reads from it, the harness feeds the connection's decoder."""

    def __init__(self, address: str = "127.0.0.1:50000", keep: bool = True) -> None:
        self.address = address
        self.keep = keep
        self.data = bytearray()
        self.sent = 0  # bytes written, kept or not
        self.closed_with: list[int] = []  # the reason code of each close

    def recv(self, idle: Any = None) -> bytes:
        raise AssertionError("the in-process harness feeds the connection's decoder itself")

    @property
    def unbuffered(self) -> bool:
        return False  # never park: there is no socket for a read watcher

    def sendall(self, data: bytes) -> None:
        if self.closed_with:
            raise OSError("write on a closed transport")
        self.sent += len(data)
        if self.keep:
            self.data += data

    def try_send(self, data: bytes) -> bool:
        self.sendall(data)
        return True

    @property
    def unsent(self) -> bool:
        return False

    def fileno(self) -> int:
        return -1

    def linger_close(self, reason_code: int = 0) -> None:
        self.close(reason_code)

    def close(self, reason_code: int = 0) -> None:
        self.closed_with.append(reason_code)


class Listener:
    """What a connection finds its security through (a listener's `security`)."""

    def __init__(self, security: Authority) -> None:
        self.security = security


class Verdicts:
    """An authority whose verdict per client id the test chooses (default: accept)."""

    def __init__(self) -> None:
        self.refused: dict[str, AuthResult] = {}
        self._open = OpenAuthority()
        self.requests: list[AuthRequest] = []

    def authenticate(self, request: AuthRequest,
                     still_wanted: Callable[[], bool] | None = None) -> AuthResult:
        self.requests.append(request)
        verdict = self.refused.get(request.username or "")
        return verdict if verdict is not None else self._open.authenticate(request)

    def rules(self, client_id: str, username: str | None) -> None:
        return None


class Client:
    """One client's connection: packets in as bytes, and what the broker wrote, decoded."""

    def __init__(self, broker: InProcessBroker, connection: Connection,
                 transport: FakeTransport, protocol_level: int) -> None:
        self.broker = broker
        self.connection = connection
        self.transport = transport
        self.protocol_level = protocol_level
        self._decoder = FrameDecoder(server_side=False, protocol_level=protocol_level)
        self._read = 0  # bytes of transport.data already decoded
        self.connack: ConnAck | None = None
        self.pending: list[Packet] = []

    @property
    def protocol(self) -> Any:
        return self.connection.protocol

    @property
    def session(self) -> Any:
        return self.connection.protocol.session

    @property
    def closed(self) -> CloseReason | None:
        return self.connection.closed

    def send(self, *packets: Any) -> None:
        """The client writes `packets`; the connection reads and handles them as one read."""
        self.feed(b"".join(encode(packet, self.protocol_level) for packet in packets))

    def feed(self, data: bytes) -> None:
        """What `Connection._read` does with one read, without the socket."""
        conn = self.connection
        if conn.closed is not None:
            return
        protocol = conn.protocol
        try:
            if protocol.state is AWAIT_CONNECT and not conn.decoder.buffered():
                refuse_unless_connect(data)
            conn.decoder.feed(data)
            while True:
                packet = conn.decoder.next_packet()
                if packet is None:
                    break
                request = protocol.handle(packet)
                if request is not None:  # a CONNECT asking for its credentials' check
                    protocol.authenticated(protocol.source.security.authenticate(request))
                if protocol.close_after_flush is not None:
                    conn._close(protocol.close_after_flush, flush=True)
                    return
        except MQTTError as exc:
            conn._protocol_error(exc)

    def received(self) -> list[Packet]:
        """Every packet the broker wrote to this client since the last call, as the client
        decodes them (outboxes flushed first, as the hub would at the end of its loop)."""
        self.broker.flush()
        data = bytes(self.transport.data[self._read:])
        self._read = len(self.transport.data)
        self._decoder.feed(data)
        packets = []
        while (packet := self._decoder.next_packet()) is not None:
            packets.append(packet)
        return packets

    def lose(self, reason: CloseReason = PEER_CLOSED) -> None:
        """The network drops the connection (no DISCONNECT): as a reader seeing b""."""
        self.connection.terminate(reason)


class InProcessBroker:
    """A `BrokerContext` and the connections made to it, all in this process."""

    def __init__(self, config_text: str = NO_PERSISTENCE, store: SessionStore | None = None,
                 keep: bool = True) -> None:
        self._config_text = config_text
        self.ctx = BrokerContext.build(load_text(config_text, "test"), store or MemoryStore())
        self.flusher = ManualFlush()
        self.security = Verdicts()
        self.listener = Listener(self.security)
        self.keep = keep
        self.clients: list[Client] = []  # every connection made, in order
        self._port = 50000

    @property
    def stats(self) -> Any:
        return self.ctx.stats

    def flush(self) -> None:
        self.flusher.flush_now()

    def restarted(self) -> InProcessBroker:
        """A new broker on this one's store, restored as the server restores at start-up
        (what a restart keeps: persistent sessions, what they are owed, retained messages)."""
        again = InProcessBroker(self._config_text, self.ctx.store, self.keep)
        again.ctx.registry.restore(again.ctx.store.load(), again.ctx.retained, release=True)
        return again

    def open(self, protocol_level: int = MQTT_3_1_1) -> Client:
        """A new connection, before its CONNECT."""
        self._port += 1
        transport = FakeTransport(f"127.0.0.1:{self._port}", keep=self.keep)
        conn = Connection(self.ctx, transport, self.listener,
                          flusher=self.flusher)  # type: ignore[arg-type]
        client = Client(self, conn, transport, protocol_level)
        self.clients.append(client)
        return client

    def connect(self, client_id: str, *, clean: bool = True, protocol_level: int = MQTT_3_1_1,
                **connect_fields: Any) -> Client:
        """A client that sent CONNECT (keepalive 0 unless given); the answer is still unread."""
        client = self.open(protocol_level)
        connect_fields.setdefault("keepalive", 0)
        client.send(Connect(client_id, protocol_level, clean, **connect_fields))
        return client

    def connected(self, client_id: str, **fields: Any) -> Client:
        """A client whose CONNECT was accepted; its CONNACK read (kept in `connack`)."""
        client = self.connect(client_id, **fields)
        first, *rest = client.received()
        assert isinstance(first, ConnAck) and first.reason_code == 0, first
        client.connack = first
        client.pending = rest  # what came right after CONNACK (resends of a session)
        return client

def connect(ctx: BrokerContext, client_id: str, clean: bool = True,
            flusher: ManualFlush | None = None, keep: bool = False,
            protocol_level: int = MQTT_3_1_1) -> Connection:
    """A connected `Connection` on a fake transport (the bench's way in: no bytes kept,
    packets handed to `connection.protocol.handle` directly; its decoder is set to the
    protocol level for whoever feeds it bytes). An MQTT 5 session that is not clean never
    expires, as loadgen's."""
    conn = Connection(ctx, FakeTransport(keep=keep),
                      flusher=flusher or ManualFlush())  # type: ignore[arg-type]
    properties = ({"session_expiry_interval": 0xFFFFFFFF} if protocol_level >= 5 and not clean
                  else {})
    request = conn.protocol.handle(Connect(client_id, protocol_level, clean, keepalive=0,
                                           properties=properties))
    conn.decoder.protocol_level = protocol_level
    assert request is not None, "the CONNECT was refused"
    conn.protocol.authenticated(OpenAuthority().authenticate(request))
    return conn
