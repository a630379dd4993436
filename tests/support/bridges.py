"""Bridge tests' shared parts: a `[[bridge]]` table to a broker on loopback, and the check
that two brokers bridged `both` do not loop a message back and forth."""

from __future__ import annotations

from support.clients import PahoClient


def bridge_config(name: str, port: int, topics: list[str], extra: str = "") -> str:
    """A `[[bridge]]` to 127.0.0.1:`port` with these topic lines and a short reconnect delay;
    `extra`: more keys of that table."""
    lines = ", ".join(f'"{line}"' for line in topics)
    return (f'[[bridge]]\nname = "{name}"\naddress = ["127.0.0.1:{port}"]\n'
            f"topic = [{lines}]\nrestart_timeout = [0.1, 0.5]\n{extra}\n")


def assert_no_loop(on_left: PahoClient, on_right: PahoClient) -> None:
    """Markers published on alternate sides each arrive once on both: a loop would keep
    sending copies, so the next message on a side would not be the next marker."""
    for i, sender in enumerate((on_left, on_right, on_left, on_right)):
        marker = f"m{i}".encode()
        sender.publish(f"a/marker/{i}", marker, qos=1)
        for client in (on_left, on_right):
            [got] = client.expect(1)
            assert (got.topic, got.payload) == (f"a/marker/{i}", marker)
