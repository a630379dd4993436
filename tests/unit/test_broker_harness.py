"""The integration tests' broker harness reads the ports a broker bound from its log and
names them in its config file; a misreading would send every test to the wrong port."""

from __future__ import annotations

from pathlib import Path

from support.broker import BrokerProcess, listening

LOG = """\
2026-01-01 10:00:00,000 INFO greenfly: greenfly 0.1.0 starting with /x/greenfly.toml
2026-01-01 10:00:00,010 INFO greenfly.listener: listening: mqtt on 127.0.0.1:41234; \
anonymous clients allowed (not set, and every listener binds to a loopback address)
2026-01-01 10:00:00,011 INFO greenfly.listener: listening: ws on 127.0.0.1:41236 at /mqtt, \
/ws; anonymous clients allowed (not set)
2026-01-01 10:00:00,012 INFO greenfly.listener: listening: mqtts on ::1:8883; anonymous \
clients refused (set in [broker])
2026-01-01 10:00:00,013 INFO greenfly.listener: listening: wss on 0.0.0.0:443 at /mqtt; x
"""


def test_listening_lines_give_scheme_and_port_in_order():
    assert listening(LOG) == [("mqtt", 41234), ("ws", 41236), ("mqtts", 8883), ("wss", 443)]
    assert listening("listening: carrier pigeon on 127.0.0.1:7\n") == []


def test_bound_ports_replace_port_0_in_the_config_and_nothing_else(tmp_path: Path):
    broker = BrokerProcess(tmp_path, '[[listener]]\nbind = "127.0.0.1"\nport = 18830\n\n'
                           '[[listener]]\nbind = "127.0.0.1"\nport = 0\nprotocol = "mqtt"\n',
                           websockets=True)
    broker.ports = [("mqtt", 40001), ("ws", 40002), ("mqtt", 18830), ("mqtt", 40003)]
    broker._name_ports_in_config()
    text = broker.config_path.read_text()
    assert [line for line in text.splitlines() if line.startswith("port")] == [
        "port = 40001", "port = 40002", "port = 18830", "port = 40003"]
    assert (broker.port, broker.ws_port, broker.port_of("mqtt", 2)) == (40001, 40002, 40003)
