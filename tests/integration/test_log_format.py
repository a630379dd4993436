"""Log lines journald and log shippers understand: syslog priority prefixes when stderr is the
journal stream systemd names in JOURNAL_STREAM (device:inode, systemd.exec(5)), `[log] format
= "json"` one object per line, and one line per event however many lines a traceback has.

The broker's stderr is the test's log file; the test gives JOURNAL_STREAM that file's device
and inode, as systemd gives a service its journal socket's."""

from __future__ import annotations

import base64
import json
import os
import socket

from support.clients import PahoClient, RawClient, unique
from support.http import request

from broker.auth.passwords import hash_password
from broker.codec import Connect

HTTP = '[[listener]]\nbind = "127.0.0.1"\nport = 0\nprotocol = "http"\n'


def password_file(tmp_path):
    """A user whose password check raises OverflowError: an unforeseen error with a
    traceback, from a real input (see test_unexpected_error.py)."""
    salt = base64.b64encode(b"0123456789abcdef").decode()
    digest = base64.b64encode(bytes(64)).decode()
    path = tmp_path / "passwords"
    path.write_text(f"alice:{hash_password('pw', iterations=1000).encode()}\n"
                    f"mallet:$7${2**31}${salt}${digest}\n")
    return path


def start(broker_factory, tmp_path, log_section: str, journal: str | None, **kwargs):
    """A broker with an http listener and the overflowing password file; `journal` is
    "stderr" (JOURNAL_STREAM names its log file), "elsewhere" (names another file) or None."""
    extra = (f'[broker]\npassword_file = "{password_file(tmp_path)}"\nallow_anonymous = true\n'
             f"{HTTP}\n{log_section}")
    proc = broker_factory(extra, start=False, **kwargs)
    proc.log_path.touch()
    if journal is not None:
        target = proc.log_path if journal == "stderr" else tmp_path / "passwords"
        status = os.stat(target)
        proc.env = {"JOURNAL_STREAM": f"{status.st_dev}:{status.st_ino}"}
    return proc.start()


def provoke(proc) -> str:
    """An info (connect), a warning (wrong bearer token), an error with a traceback
    (mallet's login) and, where there is a WebSocket listener, a debug line; returns the id of
    the client that connected."""
    cid = unique("logged")
    client = PahoClient(proc.port, client_id=cid, username="alice", password="pw")
    client.connect()
    client.disconnect()
    url = f"http://127.0.0.1:{proc.port_of('http')}/api/v1/clients"
    assert request(url, token="wrong").status == 401
    failing = RawClient(proc.port)
    failing.send_packet(Connect("mallet-device", username="mallet", password=b"x"))
    assert failing.closed_by_broker()
    if proc.websockets:
        socket.create_connection(("127.0.0.1", proc.ws_port)).close()  # handshake never done
        proc.wait_for_log(r"WebSocket")
    proc.wait_for_log(r"OverflowError")
    proc.wait_for_log(rf"client disconnected: {cid} ")
    return cid


def test_on_the_journal_every_line_carries_its_syslog_priority(broker_factory, tmp_path):
    proc = start(broker_factory, tmp_path, '[log]\nlevel = "debug"\n', "stderr",
                 websockets=True)
    cid = provoke(proc)
    proc.stop()
    lines = proc.log_text().splitlines()
    assert lines and all(line[:3] in ("<3>", "<4>", "<6>", "<7>") for line in lines), lines
    assert any(line.startswith("<6>INFO greenfly") and "systemd journal" in line
               for line in lines)
    assert any(line.startswith(f"<6>INFO greenfly.connection: client connected: {cid} ")
               for line in lines)
    assert any(line.startswith("<4>WARNING greenfly.http") and "wrong bearer token" in line
               for line in lines)
    assert any(line.startswith("<7>DEBUG") and "WebSocket" in line for line in lines)
    error = [line for line in lines if "closing mallet-device" in line]
    assert len(error) == 1 and error[0].startswith("<3>ERROR greenfly.connection: ")
    # the traceback is in the same line, its newlines escaped
    assert "unexpected error\\nTraceback (most recent call last):\\n" in error[0]
    assert "OverflowError" in error[0]
    assert not any(line.startswith("Traceback") or line.startswith("  File")
                   for line in lines)


def test_journal_stream_of_another_file_is_not_stderr(broker_factory, tmp_path):
    proc = start(broker_factory, tmp_path, "", "elsewhere")
    provoke(proc)
    proc.stop()
    lines = proc.log_text().splitlines()
    assert not any(line.startswith("<") for line in lines)
    assert any(" INFO greenfly" in line for line in lines)  # the usual time-stamped text
    assert sum("OverflowError" in line for line in lines) >= 1
    assert not any(line.startswith("Traceback") for line in lines)


def test_json_format_is_one_object_per_line(broker_factory, tmp_path):
    proc = start(broker_factory, tmp_path, '[log]\nformat = "json"\n', None)
    cid = provoke(proc)
    proc.stop()
    events = [json.loads(line) for line in proc.log_text().splitlines()]
    assert all({"time", "level", "logger", "message"} <= set(event) for event in events)
    connected = next(e for e in events if e["message"].startswith("client connected:"))
    assert connected["client_id"] == cid and connected["level"] == "info"
    assert connected["address"].startswith("127.0.0.1:")
    assert connected["time"].endswith("+00:00")
    gone = next(e for e in events if e["message"].startswith(f"client disconnected: {cid}"))
    assert gone["reason"] == "client DISCONNECT"
    warning = next(e for e in events if "wrong bearer token" in e["message"])
    assert warning["level"] == "warning" and warning["logger"] == "greenfly.http"
    error = next(e for e in events if "closing mallet-device" in e["message"])
    assert error["level"] == "error" and error["client_id"] == "mallet-device"
    assert error["exception"].startswith("Traceback (most recent call last):\n")
    assert error["exception"].rstrip().splitlines()[-1].startswith("OverflowError")


def test_json_on_the_journal_keeps_the_priority(broker_factory, tmp_path):
    proc = start(broker_factory, tmp_path, '[log]\nformat = "json"\n', "stderr")
    provoke(proc)
    proc.stop()
    lines = proc.log_text().splitlines()
    for line in lines:
        prefix, body = line[:3], json.loads(line[3:])
        assert prefix == {"error": "<3>", "warning": "<4>", "info": "<6>"}[body["level"]]
