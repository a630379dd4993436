"""A broker imports only what its configuration uses before its ports accept (issue 17).

The broker runs as configured, with the interpreter's own import log switched on
(`PYTHONPROFILEIMPORTTIME`, what `python -X importtime` prints: one stderr line per module,
when it is first imported). Every module named before the `listening:` line was loaded on the
way to the open port. A plain MQTT listener must get there without WebSockets (wsproto, h11),
TLS (ssl), the HTTP listener (gevent.pywsgi, prometheus_client), the operator tools, password
hashing (hashlib) or the hash threads; a configuration that has them must load them, which
shows the log sees what the broker imports.
"""

from __future__ import annotations

import re

import pytest
from support.http import HTTP_LISTENER
from support.tls import make_certificates

IMPORTED = re.compile(r"^import time:\s*\d+ \|\s*\d+ \|\s*(\S+)\s*$", re.M)
IMPORT_LOG = {"PYTHONPROFILEIMPORTTIME": "1"}

# Modules a plain MQTT broker has no use for before its port accepts, and what needs them.
UNUSED = {
    "wsproto": "websockets listener", "h11": "websockets listener",
    "ssl": "TLS", "_ssl": "TLS", "gevent.ssl": "TLS",
    "gevent.pywsgi": "http listener", "prometheus_client": "http listener",
    "broker.server.http_listener": "http listener", "broker.server.admin_api": "http listener",
    "broker.tools.admin_client": "greenfly clients/kick/top", "urllib.request": "admin tools",
    "broker.tools.probe": "greenfly probe", "broker.link.bridge": "[[bridge]]",
    "hashlib": "password_file", "gevent.threadpool": "the first password check",
    "redis": "[cluster]", "statistics": "nothing", "ctypes": "malloc_trim, once it accepts",
}


def imported_before_listening(broker) -> set[str]:
    log = broker.log_text()
    listening = log.index("listening:")  # the first listener: its port accepts from here
    return set(IMPORTED.findall(log[:listening]))


def test_a_plain_mqtt_broker_starts_without_what_it_does_not_use(broker_factory):
    broker = broker_factory(env=IMPORT_LOG)
    loaded = imported_before_listening(broker)
    assert "gevent" in loaded and "broker.server.root" in loaded  # the log is there
    wrongly = {name: UNUSED[name] for name in UNUSED if name in loaded}
    assert wrongly == {}, f"imported before the port accepts, though only needed for: {wrongly}"


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certificates(tmp_path_factory.mktemp("certs"))


@pytest.mark.parametrize(("listener", "needs"), [
    ('[[listener]]\nbind = "127.0.0.1"\nport = 0\nprotocol = "websockets"\n', {"wsproto", "h11"}),
    (HTTP_LISTENER, {"prometheus_client", "gevent.pywsgi"}),
    ("tls", {"ssl", "gevent.ssl"}),
], ids=["websockets", "http", "tls"])
def test_a_listener_that_needs_a_module_loads_it_before_accepting(broker_factory, certs,
                                                                   listener, needs):
    if listener == "tls":
        listener = ('[[listener]]\nbind = "127.0.0.1"\nport = 0\n'
                    f'certfile = "{certs.server_cert}"\nkeyfile = "{certs.server_key}"\n')
    broker = broker_factory(listener, env=IMPORT_LOG)
    log = broker.log_text()
    # Every listener opens before the last `listening:` line: everything it needs is loaded.
    loaded = set(IMPORTED.findall(log[:log.rindex("listening:")]))
    assert needs <= loaded, f"missing: {needs - loaded}"
