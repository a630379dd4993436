"""TLS for listeners: the server context a `[[listener]]` asks for, and the identity a
verified client certificate carries.

The context is gevent's cooperative `SSLContext`, so its sockets yield instead of blocking
the hub. Building it reads the certificate, key and CA files: a bad one is a `ConfigError`
naming the key, at start-up, on `greenfly check` and on reload (when it keeps the running
configuration). `ssl` is imported by the first context built: a broker without TLS never
loads it (a few ms of its cold start).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..config.schema import BridgeSection, ListenerSection
from ..errors import ConfigError

if TYPE_CHECKING:
    import ssl


def _context(purpose: str, version: str) -> ssl.SSLContext:
    """gevent's cooperative SSLContext (sockets that yield) for `purpose` ("server" or
    "client"), with the minimum TLS version `version` names."""
    import ssl

    from gevent import ssl as cooperative_ssl

    context = cooperative_ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if purpose == "server"
                                         else ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = {"tlsv1.2": ssl.TLSVersion.TLSv1_2,
                               "tlsv1.3": ssl.TLSVersion.TLSv1_3}[version]
    return context


def build_ssl_context(listener: ListenerSection) -> ssl.SSLContext | None:
    """The TLS context of a listener, or None without TLS; ConfigError names the bad key."""
    if not listener.tls:
        return None
    import ssl

    context = _context("server", listener.tls_version)
    where = f"listener {listener.bind}:{listener.port}"
    assert listener.certfile is not None  # checked above: no certfile, no TLS context
    try:
        context.load_cert_chain(listener.certfile, listener.keyfile)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load the certificate/key: {exc}", file=listener.certfile,
                          key=f"{where} certfile/keyfile") from None
    if listener.cafile:
        try:
            context.load_verify_locations(listener.cafile)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load the CA file: {exc}", file=listener.cafile,
                              key=f"{where} cafile") from None
    context.verify_mode = ssl.CERT_REQUIRED if listener.require_certificate else ssl.CERT_NONE
    return context


def certificate_identity(peer_certificate: dict[str, Any] | None) -> str | None:
    """The common name of a verified client certificate."""
    if not peer_certificate:
        return None
    for rdn in peer_certificate.get("subject", ()):
        for name, value in rdn:
            if name == "commonName":
                return str(value)
    return None


def build_bridge_context(bridge: BridgeSection) -> ssl.SSLContext | None:
    """The TLS context of a bridge to its remote (None without cafile): the remote's
    certificate must be signed by cafile and, unless `insecure`, name the host dialled."""
    if bridge.cafile is None:
        return None
    import ssl

    context = _context("client", bridge.tls_version)
    where = f"bridge {bridge.name}"
    try:
        context.load_verify_locations(bridge.cafile)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load the CA file: {exc}", file=bridge.cafile,
                          key=f"{where} cafile") from None
    if bridge.certfile:
        try:
            context.load_cert_chain(bridge.certfile, bridge.keyfile)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load the certificate/key: {exc}", file=bridge.certfile,
                              key=f"{where} certfile/keyfile") from None
    context.check_hostname = not bridge.insecure
    context.verify_mode = ssl.CERT_REQUIRED
    return context
