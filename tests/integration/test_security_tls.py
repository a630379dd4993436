"""TLS on mqtt and websockets listeners: mqtts:// and wss:// without a proxy, client
certificates as identities, certificates reloaded on SIGHUP for new handshakes."""

from __future__ import annotations

import shutil
import signal
import socket
import ssl
import time

import pytest
from support.clients import PahoClient, RawClient, unique
from support.tls import make_certificates


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certificates(tmp_path_factory.mktemp("certs"))


def _tls_listener(certs, extra: str = "", protocol: str = "mqtt") -> str:
    return (f'[[listener]]\nbind = "127.0.0.1"\nport = 0\nprotocol = "{protocol}"\n'
            f'certfile = "{certs.server_cert}"\nkeyfile = "{certs.server_key}"\n{extra}')


@pytest.fixture
def tls_broker(broker_factory, certs):
    proc = broker_factory(_tls_listener(certs))
    proc.tls_port = proc.port_of("mqtts")
    return proc


def _paho_tls(port, certs, client_cert=None, **kwargs):
    client = PahoClient(port, **kwargs)
    certfile, keyfile = client_cert or (None, None)
    client.client.tls_set(ca_certs=str(certs.ca), certfile=certfile and str(certfile),
                          keyfile=keyfile and str(keyfile))
    return client


def test_paho_over_mqtts_round_trip(tls_broker, certs):
    sub = _paho_tls(tls_broker.tls_port, certs)
    assert sub.connect() == (False, 0)
    topic = f"{unique('tls')}/t"
    sub.subscribe(topic, 1)
    plain = PahoClient(tls_broker.port)  # the plain listener beside it reaches it too
    plain.connect()
    plain.publish(topic, b"over tls", qos=1)
    assert sub.expect(1)[0].payload == b"over tls"
    sub.disconnect()
    plain.disconnect()
    assert "listening: mqtts on 127.0.0.1:" in tls_broker.log_text()


def test_plain_mqtt_on_a_tls_port_fails_the_handshake_and_is_logged(tls_broker):
    raw = RawClient(tls_broker.tls_port)
    raw.send(bytes.fromhex("100c00044d5154540402003c0000"))
    assert raw.closed_by_broker(5)
    tls_broker.wait_for_log(r"TLS handshake failed")


def test_tls_handshake_must_finish_within_connect_timeout(broker_factory, certs):
    proc = broker_factory("[broker]\nconnect_timeout = 1\n" + _tls_listener(certs))
    port = proc.port_of("mqtts")
    sock = socket.create_connection(("127.0.0.1", port), timeout=20)
    start = time.monotonic()
    assert sock.recv(10) == b""  # the broker gives up on the silent socket
    assert 0.9 <= time.monotonic() - start < 5  # its 1 s, well before the default 10 s
    proc.wait_for_log(r"TLS handshake not completed within 1s")


def test_client_certificate_required_and_used_as_user_name(broker_factory, certs, tmp_path):
    acl = tmp_path / "acl"
    acl.write_text("user device-7\ntopic readwrite devices/7/#\n")
    proc = broker_factory(f'[broker]\nacl_file = "{acl}"\n' + _tls_listener(
        certs, f'cafile = "{certs.ca}"\nrequire_certificate = true\n'
        "use_identity_as_username = true\n"))
    port = proc.port_of("mqtts")
    device = _paho_tls(port, certs, certs.client("device-7"))
    assert device.connect() == (False, 0)
    proc.wait_for_log(r"client connected: .* user=device-7")
    assert device.subscribe("devices/7/#", 1) == [1]
    assert device.subscribe("devices/8/#", 1) == [0x80]  # the CN is the ACL user
    device.disconnect()
    # Without a certificate the handshake itself is refused.
    context = ssl.create_default_context(cafile=str(certs.ca))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock, \
            pytest.raises((ssl.SSLError, ConnectionError)), \
            context.wrap_socket(sock, server_hostname="localhost") as tls:
        tls.sendall(bytes.fromhex("100c00044d5154540402003c0000"))
        assert tls.recv(4) == b""  # TLS 1.3 reports the missing certificate on read
        raise ConnectionError("closed")


def test_tls_minimum_version_is_enforced(broker_factory, certs):
    port = broker_factory(_tls_listener(certs, 'tls_version = "tlsv1.3"\n')).port_of("mqtts")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(str(certs.ca))
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock, \
            pytest.raises(ssl.SSLError):
        context.wrap_socket(sock, server_hostname="localhost")
    context.maximum_version = ssl.TLSVersion.TLSv1_3
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock, \
            context.wrap_socket(sock, server_hostname="localhost") as tls:
        assert tls.version() == "TLSv1.3"


def test_sighup_loads_new_certificates_for_new_handshakes(broker_factory, certs, tmp_path):
    from support.tls import make_certificates
    live = tmp_path / "live"
    live.mkdir()
    shutil.copy(certs.server_cert, live / "server.crt")
    shutil.copy(certs.server_key, live / "server.key")
    proc = broker_factory(f'[[listener]]\nbind = "127.0.0.1"\nport = 0\n'
                          f'certfile = "{live / "server.crt"}"\n'
                          f'keyfile = "{live / "server.key"}"\n')
    port = proc.port_of("mqtts")
    before = _paho_tls(port, certs)
    assert before.connect() == (False, 0)
    renewed = make_certificates(tmp_path / "renewed")  # a new CA and server certificate
    shutil.copy(renewed.server_cert, live / "server.crt")
    shutil.copy(renewed.server_key, live / "server.key")
    proc.mark_log()
    proc.signal(signal.SIGHUP)
    proc.wait_for_log(r"configuration reloaded")
    after = _paho_tls(port, renewed)
    assert after.connect() == (False, 0)  # the new certificate is served
    old_trust = _paho_tls(port, certs)
    with pytest.raises(ssl.SSLError):
        old_trust.connect()
    topic = f"{unique('renew')}/t"
    before.subscribe(topic, 1)  # the connection made before the reload is still there
    after.publish(topic, b"still connected", qos=1)
    assert before.expect(1)[0].payload == b"still connected"
    assert before.disconnects.empty()
    before.disconnect()
    after.disconnect()


def test_bad_certificate_path_stops_start_up_naming_it(tmp_path):
    import subprocess
    import sys
    config = tmp_path / "c.toml"
    config.write_text('[[listener]]\nport = 0\ncertfile = "/nonexistent/cert.pem"\n'
                      'keyfile = "/nonexistent/key.pem"\n')
    result = subprocess.run([sys.executable, "-m", "broker", "-c", str(config)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "/nonexistent/cert.pem" in result.stderr and "cannot load the certificate" in \
        result.stderr
    checked = subprocess.run([sys.executable, "-m", "broker", "check", "-c", str(config)],
                             capture_output=True, text=True, timeout=30)
    assert checked.returncode == 2 and "cannot load the certificate" in checked.stderr


@pytest.mark.slow
def test_mqttjs_over_wss_with_the_test_ca(broker_factory, certs, mqttjs):
    port = broker_factory(_tls_listener(certs, 'path = "/mqtt"\n', protocol="websockets")
                          ).port_of("wss")
    client = mqttjs()
    connack = client.connect_url(f"wss://127.0.0.1:{port}/mqtt", ca=certs.ca.read_text(),
                                 rejectUnauthorized=True, clientId=unique("wss"),
                                 keepalive=30)
    assert connack["returnCode"] == 0
    topic = f"{unique('wss')}/t"
    assert client.subscribe(topic, qos=1) == [1]
    client.publish(topic, b"over wss", qos=1)
    assert client.expect(1)[0]["payload"] == b"over wss"
    untrusting = mqttjs()  # without the CA, MQTT.js refuses the certificate: no CONNACK
    with pytest.raises(AssertionError, match="no answer"):
        untrusting.call("connect", timeout=3, url=f"wss://127.0.0.1:{port}/mqtt",
                        options={"rejectUnauthorized": True, "connectTimeout": 2000})
    assert any("certificate" in error for error in untrusting.errors), untrusting.errors
