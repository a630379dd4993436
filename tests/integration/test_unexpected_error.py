"""An error the broker did not foresee closes only its own connection, says so in the log
with a traceback, and leaves the listener's count of connections right.

The unforeseen error here comes from a real input: a password file entry whose iteration
count (2^31) parses as a number but is more than `hashlib.pbkdf2_hmac` takes, so checking
that user's password raises `OverflowError` (neither an `MQTTError` nor an `OSError`).
"""

from __future__ import annotations

import base64

from support.broker import free_port, wait_for_port
from support.clients import RawClient, unique

from broker.auth.passwords import hash_password
from broker.codec import ConnAck, Connect

TOO_MANY_ITERATIONS = 2**31


def test_unexpected_error_is_logged_with_traceback_and_keeps_max_connections(
        broker_factory, tmp_path):
    good = hash_password("wonderland", iterations=1000).encode()
    salt = base64.b64encode(b"0123456789abcdef").decode()
    digest = base64.b64encode(bytes(64)).decode()
    passwords = tmp_path / "passwords"
    passwords.write_text(f"alice:{good}\n"
                         f"mallet:$7${TOO_MANY_ITERATIONS}${salt}${digest}\n")
    local = free_port()
    proc = broker_factory(f'[broker]\npassword_file = "{passwords}"\nallow_anonymous = false\n'
                          f'[[listener]]\nbind = "127.0.0.1"\nport = {local}\n'
                          "max_connections = 2\n")
    wait_for_port(local, 10)
    healthy = RawClient(local)
    assert healthy.connect(unique(), username="alice", password=b"wonderland") == \
        ConnAck(0, False)

    failing = RawClient(local)
    failing.send_packet(Connect("mallet-device", username="mallet", password=b"x"))
    assert failing.closed_by_broker()  # no CONNACK: the check itself failed
    # One event, one line: the traceback follows on the same line, its newlines escaped.
    proc.wait_for_log(
        r"ERROR greenfly\.connection: closing mallet-device from 127\.0\.0\.1:\d+: "
        r"unexpected error\\nTraceback \(most recent call last\):\\n.*OverflowError")
    assert " failed with OverflowError" not in proc.log_text()  # gevent's stderr report

    # One connection (`healthy`) is open: max_connections = 2 admits one more, not two.
    second = RawClient(local)
    assert second.connect(unique(), username="alice", password=b"wonderland") == \
        ConnAck(0, False)
    proc.mark_log()
    third = RawClient(local)
    assert third.closed_by_broker(3)
    proc.wait_for_log(r"max_connections \(2\) reached")
    healthy.send(bytes.fromhex("c000"))  # PINGREQ: the first connection is still served
    assert healthy.recv_bytes(2) == bytes.fromhex("d000")
