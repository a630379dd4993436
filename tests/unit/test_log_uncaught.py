"""An error nothing caught in a greenlet goes through the log as one line, not gevent's
many-line report on stderr (the rest of the log format is tested on a real broker in
tests/integration/test_log_format.py)."""

from __future__ import annotations

import io
import logging
import sys

import gevent

from broker.server.log_format import configure, log_uncaught


def test_a_greenlet_error_is_one_log_line():
    hub = gevent.get_hub()
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, sys.excepthook, hub.__dict__.get("print_exception"))
    stream = io.StringIO()
    try:
        configure("info", "text", stream)
        log_uncaught(hub)
        gevent.spawn(lambda: {}["missing-key"]).join()
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        sys.excepthook = saved[2]
        if saved[3] is None:
            hub.__dict__.pop("print_exception", None)
        else:
            hub.print_exception = saved[3]
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1, lines
    assert " ERROR greenfly.uncaught: <Greenlet" in lines[0]
    assert "failed\\nTraceback (most recent call last):\\n" in lines[0]
    assert lines[0].endswith("KeyError: 'missing-key'")
