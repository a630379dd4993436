"""`Bridge`: one `[[bridge]]`, a greenlet that keeps a link to the remote broker up.

The loop: dial the addresses in order (failover: a failure moves on to the next one, and only
after every address failed does it wait), TLS when cafile is set, CONNECT with Mosquitto's
bridge bit (3.1.1, `try_private`) and the password read from its file at each attempt, then
serve the link (link/bridge_link.py) until it ends. Waits grow from restart_timeout's base,
doubled after each failed round up to its cap, each with jitter (75-100 % of the step), so
a refused login is retried slowly, never in a tight loop. Every change of state is one log
line; with `notifications`, `$SYS/broker/connection/<name>/state` is 1 while the link is up
and 0 otherwise, retained, as Mosquitto publishes it.
"""

from __future__ import annotations

import contextlib
import logging
import random
import socket
import ssl
import time
from typing import Any

import gevent
from gevent import socket as gsocket

from ..codec import MQTT_3_1_1, MQTT_5, ConnAck, Connect, FrameDecoder, encode
from ..config.schema import BridgeSection
from ..core.bridge_session import bridge_env, open_session
from ..core.context import BrokerContext
from ..core.message import Message
from ..core.session import Session
from ..errors import CONNACK_V3_FROM_REASON, MQTTError, ReasonCode
from ..net.tls import build_bridge_context
from .bridge_link import BridgeLink

log = logging.getLogger("greenfly.bridge")

CONNECT_TIMEOUT = 10.0  # seconds for TCP, TLS and CONNACK together

_V3_WORDS = {1: "unacceptable protocol version", 2: "client id rejected",
             3: "server unavailable", 4: "bad user name or password",
             5: "not authorized (a wrong user name or password, or not allowed to connect)"}


class AttemptFailed(Exception):
    """One connection attempt failed; the message says why, for the log."""


class Bridge:
    def __init__(self, ctx: BrokerContext, config: BridgeSection) -> None:
        self.ctx = ctx
        self.config = config
        self.name = config.name
        self.ssl_context = build_bridge_context(config)  # ConfigError before anything starts
        self.session: Session | None = None
        self.link: BridgeLink | None = None
        self.connected_to: str | None = None
        # What /metrics and the admin API show: read there, kept nowhere else
        self.state = "stopped"  # connecting (never up yet), connected, reconnecting, stopped
        self.since = time.time()  # when `state` last changed
        self.connects = 0  # links established since this Bridge was built
        self._greenlet: gevent.Greenlet[..., Any] | None = None

    def start(self) -> None:
        self.session = open_session(self.ctx.registry, self.config, self.ctx.env)
        self._set_state("connecting")
        self._greenlet = gevent.spawn(self._run)

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill(block=False)
        if self.link is not None:
            self.link.close("the bridge stops")
        self.link, self.connected_to = None, None
        self._set_state("stopped")
        self._notify(False)

    def _set_state(self, state: str) -> None:
        if state != self.state:
            self.state, self.since = state, time.time()

    # -- the loop ----------------------------------------------------------------------------

    def _run(self) -> None:
        self._notify(False)
        failures = 0
        index = 0
        addresses = self.config.address
        while True:
            address = addresses[index % len(addresses)]
            try:
                link = self._connect(address)
            except AttemptFailed as exc:
                index += 1
                if index % len(addresses):  # another address to try first
                    log.warning("bridge %s: %s; trying %s", self.name, exc,
                                addresses[index % len(addresses)])
                    continue
                failures += 1
                delay = self._delay(failures)
                log.warning("bridge %s: %s; retrying in %.1f s", self.name, exc, delay)
                gevent.sleep(delay)
                continue
            failures = 0
            self.link, self.connected_to = link, address
            self.connects += 1
            self._set_state("connected")
            assert self.session is not None
            log.info("bridge %s: connected to %s (%s); %d message(s) owed to it", self.name,
                     address, "MQTT 5" if link.level >= MQTT_5 else "MQTT 3.1.1",
                     self.session.owed())
            self._notify(True)
            why = link.run()
            self.link, self.connected_to = None, None
            self._set_state("reconnecting")
            self._notify(False)
            delay = self._delay(1)
            log.warning("bridge %s: link to %s lost: %s; reconnecting in %.1f s", self.name,
                        address, why, delay)
            gevent.sleep(delay)

    def _delay(self, failures: int) -> float:
        base, cap = self.config.restart_timeout
        step = min(cap, base * 2 ** min(failures - 1, 30))
        return float(step * random.uniform(0.75, 1.0))

    def _notify(self, up: bool) -> None:
        if self.config.notifications:
            message = Message(f"$SYS/broker/connection/{self.name}/state",
                              b"1" if up else b"0", 0, True)
            self.ctx.router.publish(message, persist=False)

    # -- one attempt -------------------------------------------------------------------------

    def _connect(self, address: str) -> BridgeLink:
        host, _, port = address.rpartition(":")
        host = host.strip("[]")
        sock: Any = None
        try:
            sock = gsocket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.ssl_context is not None:
                sock = self.ssl_context.wrap_socket(sock, server_hostname=host)
            level = MQTT_5 if self.config.protocol_version == "mqttv5" else MQTT_3_1_1
            sock.sendall(encode(self._connect_packet(level), level))
            decoder = FrameDecoder(server_side=False, protocol_level=level)
            connack = None
            while connack is None:
                data = sock.recv(65536)
                if not data:
                    raise AttemptFailed(f"{address} closed the connection before CONNACK")
                decoder.feed(data)
                connack = decoder.next_packet()
            if not isinstance(connack, ConnAck):
                raise AttemptFailed(f"{address} answered CONNECT with "
                                    f"{type(connack).__name__}, not CONNACK")
            if connack.reason_code != ReasonCode.SUCCESS:
                raise AttemptFailed(self._refusal(connack.reason_code, level))
            sock.settimeout(None)
        except AttemptFailed:
            _close(sock)
            raise
        except ssl.SSLError as exc:
            _close(sock)
            raise AttemptFailed(f"TLS with {address} failed: {exc.reason or exc}") from None
        except ConnectionRefusedError:
            _close(sock)
            raise AttemptFailed(f"{address} refused the connection (nothing listening)") from None
        except TimeoutError:
            _close(sock)
            raise AttemptFailed(f"no answer from {address} within {CONNECT_TIMEOUT:g} s") from None
        except OSError as exc:
            _close(sock)
            raise AttemptFailed(f"cannot reach {address}: {exc.strerror or exc}") from None
        except MQTTError as exc:
            _close(sock)
            raise AttemptFailed(f"{address} broke the protocol: {exc}") from None
        assert self.session is not None
        self.session.env = bridge_env(self.ctx.env, self.config,
                                      connack.properties.get("receive_maximum", 0))
        if not connack.session_present:
            # A new remote session: what it had of our QoS 2 exchanges is gone with it.
            for packet_id in list(self.session.incoming_qos2):
                self.session.release_qos2(packet_id)
        return BridgeLink(self.ctx, self.config, self.session, sock, decoder, level)

    def _connect_packet(self, level: int) -> Connect:
        config = self.config
        password = None
        if config.remote_password_file:
            try:
                with open(config.remote_password_file, "rb") as fh:
                    password = fh.read().rstrip(b"\r\n")
            except OSError as exc:
                raise AttemptFailed(f"cannot read remote_password_file "
                                    f"{config.remote_password_file}: {exc.strerror}") from None
        properties: dict[str, Any] = {}
        if level >= MQTT_5 and not config.clean_session:
            properties["session_expiry_interval"] = 0xFFFF_FFFF  # as long as the remote keeps it
        return Connect(self.client_id, level, config.clean_session, config.keepalive, None,
                       config.remote_username, password, properties,
                       config.try_private and level < MQTT_5)

    @property
    def client_id(self) -> str:
        return self.config.client_id or f"{socket.gethostname()}.{self.name}"

    @staticmethod
    def _refusal(code: int, level: int) -> str:
        if level >= MQTT_5:
            words = ReasonCode(code).name.replace("_", " ").lower() \
                if code in ReasonCode._value2member_map_ else "unknown reason"
            shown = code
        else:
            shown = CONNACK_V3_FROM_REASON.get(code, code)
            words = _V3_WORDS.get(shown, "unknown return code")
        login = code in (ReasonCode.BAD_USER_NAME_OR_PASSWORD, ReasonCode.NOT_AUTHORIZED)
        what = "remote refused the login" if login else "remote refused the connection"
        return f"{what}: {words} (CONNACK 0x{shown:02X})"


def _close(sock: Any) -> None:
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.close()
