"""`greenfly probe URL`: connect like a client, through whatever is on the path; say what it does.

URLs: `mqtt://host[:1883]`, `mqtts://host[:8883]`, `ws://host[:80]/path`, `wss://host[:443]/path`
(no path means `/mqtt`). The probe reports each step with its time — TCP connect, TLS (version,
cipher, certificate), the WebSocket upgrade (HTTP status, subprotocol), CONNACK — and explains
the usual refusals (a 400 from a proxy that drops the Upgrade header, a 502 when the broker is
down, CONNACK 4/5 without credentials). Then, by mode:
- `--idle N`: hold a keepalive-0 connection with no traffic at all for up to N seconds and
  report whether and when the path cut it. greenfly never closes an idle keepalive-0
  connection, so a cut is a proxy or NAT idle timeout, and the report says how long it needs
  to be for clients with `--keepalive K` (default 30): over 1.5 x K.
- `--keepalive K --duration N`: ping like a client with keepalive K for N seconds; a healthy
  path keeps it open.
A progress line shows while it waits. Exit status: 0 fine, 1 failed or cut, 2 bad usage.

Why a client of its own (the standard library's socket and ssl, greenfly's codec, and wsproto
for WebSocket frames): real clients hide the moments that matter here. They reconnect by
themselves, ping when they like and report a cut as a vague error long after it happened.
"""

from __future__ import annotations

import argparse
import os
import socket
import ssl
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO
from urllib.parse import urlsplit

from wsproto import ConnectionType, WSConnection
from wsproto import events as wse

from ..codec import ConnAck, Connect, Disconnect, FrameDecoder, PingReq, PingResp, encode
from ..errors import MQTTError, ReasonCode

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883, "ws": 80, "wss": 443}
PROGRESS_EVERY = 5.0  # seconds between progress lines when stderr is not a terminal
HTTP_HINTS = {
    400: "the upgrade did not reach a WebSocket server: a proxy without `proxy_set_header "
         "Upgrade $http_upgrade` and `Connection upgrade` answers this (greenfly does too, to "
         "plain HTTP)",
    404: "nothing serves this path: the proxy has no location for it, or it is not one of "
         "the listener's `path` values",
    426: "the server wants another WebSocket version",
    502: "the proxy cannot reach the broker: is greenfly running, is the upstream port right?",
    504: "the proxy timed out reaching the broker",
}
CONNACK_HINTS = {
    ReasonCode.BAD_USER_NAME_OR_PASSWORD: "bad user name or password (-u/-P)",
    ReasonCode.NOT_AUTHORIZED: "not authorized: this broker wants a user name (-u/-P)",
}


class ProbeFailed(Exception):
    """A step failed; the message says which and, where it can, why."""


class PathClosed(Exception):
    """The stream ended: "closed", "reset", or "websocket close" with the peer's close code."""

    def __init__(self, how: str, ws_code: int | None = None) -> None:
        super().__init__(how)
        self.how = how
        self.ws_code = ws_code


@dataclass(frozen=True, slots=True)
class Target:
    scheme: str
    host: str
    port: int
    path: str

    @property
    def tls(self) -> bool:
        return self.scheme in ("mqtts", "wss")

    @property
    def websocket(self) -> bool:
        return self.scheme in ("ws", "wss")


def parse_url(url: str) -> Target:
    parts = urlsplit(url)
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        raise ValueError(f"{url!r}: expected mqtt://, mqtts://, ws:// or wss:// and a host")
    path = parts.path or "/mqtt"
    if parts.query:
        path += "?" + parts.query
    return Target(parts.scheme, parts.hostname, parts.port or DEFAULT_PORTS[parts.scheme], path)


def register(commands: Any, config_option: argparse.ArgumentParser) -> None:
    probe = commands.add_parser(
        "probe", help="connect as a client and report what the network path does",
        description="Connect to URL as an MQTT client and report each step; with --idle, find "
        "an idle timeout on the path; with --keepalive and --duration, check a pinging client "
        "stays connected.")
    probe.add_argument("url", help="mqtt://, mqtts://, ws:// or wss:// URL")
    probe.add_argument("--idle", type=float, metavar="N",
                       help="hold a keepalive-0 connection without traffic for up to N s")
    probe.add_argument("--keepalive", type=int, metavar="K",
                       help="with --duration: ping every K s; with --idle: the keepalive your "
                       "clients use, for the advice (default 30)")
    probe.add_argument("--duration", type=float, metavar="N",
                       help="with --keepalive: how long the pinging client must survive")
    probe.add_argument("-i", "--client-id", help="client id (default: greenfly-probe-PID)")
    probe.add_argument("-u", "--username")
    probe.add_argument("-P", "--password")
    probe.add_argument("--cafile", help="CA certificates (PEM) to verify the server with")
    probe.add_argument("--insecure", action="store_true",
                       help="do not verify the server certificate")
    probe.add_argument("--timeout", type=float, default=10.0,
                       help="seconds each connection step may take (default 10)")
    probe.set_defaults(handler=_handler)


def _handler(args: argparse.Namespace, config_path: str | None) -> int:
    if args.duration is not None and not args.keepalive:
        print("greenfly probe: --duration needs --keepalive K (K > 0)", file=sys.stderr)
        return 2
    if args.idle is not None and args.duration is not None:
        print("greenfly probe: use --idle or --duration, not both", file=sys.stderr)
        return 2
    try:
        target = parse_url(args.url)
    except ValueError as exc:
        print(f"greenfly probe: {exc}", file=sys.stderr)
        return 2
    return run_probe(target, args, sys.stdout, sys.stderr)


def run_probe(target: Target, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    def say(line: str) -> None:
        print(line, file=out, flush=True)

    say(f"greenfly probe {target.scheme}://{target.host}:{target.port}"
        + (target.path if target.websocket else ""))
    idle = args.idle is not None
    keepalive = 0 if idle else (args.keepalive or 0)
    try:
        stream = open_stream(target, args, say)
        try:
            connack_in(stream, target, args, keepalive, say)
            if idle:
                return idle_check(stream, target, args.idle, args.keepalive or 30, say, err)
            if args.duration is not None:
                return keepalive_check(stream, keepalive, args.duration, say, err)
            stream.send(encode(Disconnect()))
            say("ok")
            return 0
        finally:
            stream.close()
    except ProbeFailed as exc:
        say(f"FAILED: {exc}")
    except PathClosed as exc:
        say(f"FAILED: the connection ended ({exc.how})")
    return 1


def _ms(start: float) -> str:
    return f"{(time.monotonic() - start) * 1000:.1f} ms"


def open_stream(target: Target, args: argparse.Namespace, say: Callable[[str], None]) -> Stream:
    start = time.monotonic()
    try:
        sock = socket.create_connection((target.host, target.port), timeout=args.timeout)
    except OSError as exc:
        raise ProbeFailed(f"tcp: cannot connect to {target.host}:{target.port}: "
                          f"{exc.strerror or exc}") from None
    peer = sock.getpeername()
    say(f"  tcp: connected to {peer[0]}:{peer[1]} in {_ms(start)}")
    if target.tls:
        sock = _tls(sock, target, args, say)
    stream = Stream(sock)
    if target.websocket:
        stream.upgrade(target, args.timeout, say)
    return stream


def _tls(sock: socket.socket, target: Target, args: argparse.Namespace,
         say: Callable[[str], None]) -> ssl.SSLSocket:
    context = ssl.create_default_context(cafile=args.cafile)
    if args.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if target.websocket:
        context.set_alpn_protocols(["http/1.1"])
    start = time.monotonic()
    try:
        tls = context.wrap_socket(sock, server_hostname=target.host)
    except ssl.SSLCertVerificationError as exc:
        sock.close()
        raise ProbeFailed(f"tls: the certificate does not verify: {exc.verify_message} "
                          "(--cafile FILE for a private CA; --insecure to look anyway)") from None
    except (ssl.SSLError, OSError) as exc:
        sock.close()
        raise ProbeFailed(f"tls: handshake failed: {exc}") from None
    cert = tls.getpeercert() or {}
    subject = ", ".join(f"{k}={v}" for rdn in cert.get("subject", ()) for k, v in rdn)
    about = (f"; certificate {subject or '(not verified)'}"
             + (f", valid until {cert['notAfter']}" if "notAfter" in cert else ""))
    cipher = tls.cipher()
    say(f"  tls: {tls.version()} {cipher[0] if cipher else ''} in {_ms(start)}{about}")
    return tls


class Stream:
    """A blocking byte stream to the broker: TCP or TLS, with WebSocket frames when upgraded."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.ws: WSConnection | None = None
        self._closed: PathClosed | None = None  # a close frame read behind data not yet returned

    def upgrade(self, target: Target, timeout: float, say: Callable[[str], None]) -> None:
        ws = WSConnection(ConnectionType.CLIENT)
        default = DEFAULT_PORTS[target.scheme]
        host = target.host if target.port == default else f"{target.host}:{target.port}"
        start = time.monotonic()
        self.sock.sendall(ws.send(wse.Request(host=host, target=target.path,
                                          subprotocols=["mqtt", "mqttv3.1"])))
        deadline = start + timeout
        while True:
            data = self._read(deadline - time.monotonic())
            if data is None:
                raise ProbeFailed(f"websocket: no answer to GET {target.path} in {timeout:g} s")
            ws.receive_data(data or None)
            for event in ws.events():
                if isinstance(event, wse.AcceptConnection):
                    say(f"  websocket: GET {target.path} -> 101 in {_ms(start)}, subprotocol "
                        f"{event.subprotocol or '(none)'}")
                    self.ws = ws
                    return
                if isinstance(event, wse.RejectConnection):
                    hint = HTTP_HINTS.get(event.status_code, "")
                    raise ProbeFailed(f"websocket: GET {target.path} -> HTTP {event.status_code}"
                                      + (f": {hint}" if hint else ""))
            if not data:
                raise ProbeFailed(f"websocket: closed before answering GET {target.path}")

    def _read(self, timeout: float) -> bytes | None:
        """Raw bytes (b"" at the end of the stream), or None when `timeout` passed."""
        self.sock.settimeout(max(timeout, 0.001))
        try:
            return self.sock.recv(65536)
        except TimeoutError:
            return None
        except ConnectionResetError:
            raise PathClosed("reset") from None

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(self.ws.send(wse.BytesMessage(data)) if self.ws else data)
        except OSError as exc:
            raise PathClosed(f"send failed: {exc}") from None

    def recv(self, timeout: float) -> bytes:
        """MQTT bytes; b"" when `timeout` passed first; PathClosed when the stream ended."""
        if self._closed is not None:
            raise self._closed
        data = self._read(timeout)
        if data is None:
            return b""
        if not data:
            raise PathClosed("closed")
        if self.ws is None:
            return data
        self.ws.receive_data(data)
        out = []
        for event in self.ws.events():
            if isinstance(event, wse.BytesMessage):
                out.append(bytes(event.data))
            elif isinstance(event, wse.Ping):
                self.sock.sendall(self.ws.send(event.response()))
            elif isinstance(event, wse.CloseConnection):
                # A refusing CONNACK and the close frame often share a read (through a
                # proxy, always): hand over the bytes before it, and the close next time.
                self._closed = PathClosed("websocket close", event.code)
                break
        if not out and self._closed is not None:
            raise self._closed
        return b"".join(out)

    def close(self) -> None:
        self.sock.close()


def connack_in(stream: Stream, target: Target, args: argparse.Namespace, keepalive: int,
               say: Callable[[str], None]) -> None:
    client_id = args.client_id or f"greenfly-probe-{os.getpid()}"
    password = args.password.encode() if args.password is not None else None
    start = time.monotonic()
    stream.send(encode(Connect(client_id, keepalive=keepalive, username=args.username,
                               password=password)))
    decoder = FrameDecoder(server_side=False)
    deadline = start + args.timeout
    try:
        while True:
            packet = decoder.next_packet()
            if packet is not None:
                break
            left = deadline - time.monotonic()
            if left <= 0:
                raise ProbeFailed(f"mqtt: no CONNACK within {args.timeout:g} s")
            decoder.feed(stream.recv(left))
    except PathClosed as exc:
        raise ProbeFailed(f"mqtt: the connection ended before CONNACK ({exc.how})") from None
    except MQTTError as exc:
        raise ProbeFailed(f"mqtt: not an MQTT answer: {exc}") from None
    if not isinstance(packet, ConnAck):
        raise ProbeFailed(f"mqtt: expected CONNACK, got {type(packet).__name__}")
    code = int(packet.reason_code)
    if code != ReasonCode.SUCCESS:
        try:
            name = ReasonCode(code).name.lower().replace("_", " ")
        except ValueError:
            name = f"code {code:#04x}"
        raise ProbeFailed(f"mqtt: CONNACK refused: {CONNACK_HINTS.get(code, name)}")
    say(f"  mqtt: CONNACK accepted in {_ms(start)}, session present {int(packet.session_present)}"
        f", keepalive {keepalive}, client id {client_id}")


class Progress:
    """One line on stderr while waiting: rewritten in place on a terminal, else now and then."""

    def __init__(self, err: TextIO) -> None:
        self.err = err
        self.tty = err.isatty()
        self.last = -PROGRESS_EVERY  # the first call shows a line at once

    def show(self, elapsed: float, total: float, what: str) -> None:
        if self.tty:
            self.err.write(f"\r  {what}: {elapsed:5.1f} s of {total:g} s")
        elif elapsed - self.last >= PROGRESS_EVERY:
            self.last = elapsed
            self.err.write(f"  {what}: {elapsed:.0f} s of {total:g} s, still open\n")
        self.err.flush()

    def done(self) -> None:
        if self.tty:
            self.err.write("\r\033[K")
            self.err.flush()


def idle_check(stream: Stream, target: Target, seconds: float, keepalive: int,
               say: Callable[[str], None], err: TextIO) -> int:
    say(f"  idle: holding the connection with keepalive 0 and no traffic for up to {seconds:g} s")
    progress = Progress(err)
    start = time.monotonic()
    try:
        while (elapsed := time.monotonic() - start) < seconds:
            progress.show(elapsed, seconds, "idle")
            stream.recv(min(0.5, seconds - elapsed))
    except PathClosed as exc:
        elapsed = time.monotonic() - start
        progress.done()
        say(cut_report(elapsed, exc, target, keepalive))
        return 1
    progress.done()
    stream.send(encode(Disconnect()))
    say(f"still open after {seconds:.1f} s idle: nothing on the path cut an idle connection "
        f"within {seconds:g} s")
    return 0


def cut_report(elapsed: float, exc: PathClosed, target: Target, keepalive: int) -> str:
    """The diagnosis sentence for a connection that ended while idle."""
    if exc.ws_code is not None:
        return (f"closed by the broker after {elapsed:.1f} s idle (WebSocket close "
                f"{exc.ws_code}): not an idle timeout; the broker log says why")
    about = round(elapsed)
    knob = ("raise proxy_read_timeout" if target.websocket else
            "raise proxy_timeout (nginx stream) or the idle timeout of the proxy or NAT")
    need = 1.5 * keepalive
    if elapsed > need:
        advice = f"enough for clients with keepalive {keepalive} (it needs to be over {need:g} s)"
    else:
        advice = f"with keepalive {keepalive} it needs to be over {need:g} s: {knob}"
    how = "reset" if exc.how == "reset" else "closed"
    return (f"{how} by the path after {elapsed:.1f} s idle: a proxy idle timeout of about "
            f"{about} s; {advice}")


def keepalive_check(stream: Stream, keepalive: int, duration: float,
                    say: Callable[[str], None], err: TextIO) -> int:
    say(f"  keepalive: pinging every {keepalive} s for {duration:g} s")
    progress = Progress(err)
    decoder = FrameDecoder(server_side=False)
    start = time.monotonic()
    next_ping = start + keepalive
    pending: float | None = None
    rtts: list[float] = []
    try:
        while (now := time.monotonic()) - start < duration:
            progress.show(now - start, duration, "keepalive")
            if pending is not None and now - pending > keepalive:
                progress.done()
                say(f"no PINGRESP within {keepalive} s after {now - start:.1f} s: the broker "
                    "or the path stopped answering")
                return 1
            if now >= next_ping:
                stream.send(encode(PingReq()))
                pending, next_ping = now, now + keepalive
            decoder.feed(stream.recv(min(0.5, max(0.01, next_ping - now))))
            while (packet := decoder.next_packet()) is not None:
                if isinstance(packet, PingResp) and pending is not None:
                    rtts.append(time.monotonic() - pending)
                    pending = None
        stream.send(encode(Disconnect()))
    except PathClosed as exc:
        progress.done()
        say(f"{exc.how} after {time.monotonic() - start:.1f} s with keepalive {keepalive} "
            f"({len(rtts)} pings answered): something on the path cut a connection that was "
            f"pinging every {keepalive} s (an idle timeout shorter than that, or a time limit)")
        return 1
    progress.done()
    worst = f", round trip at most {max(rtts) * 1000:.1f} ms" if rtts else ""
    say(f"survived {duration:g} s with keepalive {keepalive}: {len(rtts)} pings answered{worst}")
    return 0
