"""What `greenfly check` verifies beyond the files: what would stop the broker's start-up.

A check that said OK followed by a start-up that failed is worse than no check, so `check`
tries what start-up does first, without keeping anything:
- the journal in data_dir is read through, as start-up reads it: damage is exit 3 with the
  offset and the salvage command, as start-up would say;
- each listener's address is bound (not listened on), then closed at once, with the options
  the broker uses: a port in use or not allowed, an address this machine does not have,
  is exit 1, naming the `[[listener]]` line, as start-up would say.
When a broker already runs on data_dir (its lock is held), a port in use is most likely its
own: that is a note, not a failure.
"""

from __future__ import annotations

import os
import socket
import sys

from ..config.bind_errors import bind_failure
from ..config.schema import Config
from ..store.dir_lock import holder
from ..store.journal_file import JOURNAL_NAME, scan_journal


def startup_checks(config: Config, config_path: str | None) -> int:
    """Print what would stop start-up; 3 for a damaged journal, 1 for a listener, else 0."""
    running = holder(config.broker.data_dir) if config.persistence.enabled else None
    status = 0
    for index, listener in enumerate(config.listeners):
        exc = try_listen(listener.bind, listener.port)
        if exc is None:
            continue
        problem = bind_failure(config, index, exc)
        if running is not None and problem.key and problem.key.endswith(".port"):
            print(f"  note: {problem} (probably the running broker's, PID {running})")
            continue
        print(f"greenfly: cannot start: {problem}", file=sys.stderr)
        status = 1
    damage = journal_damage(config)
    if damage is not None:
        print(f"greenfly: cannot start: {damage}. To keep every intact record and start, run: "
              f"greenfly check --salvage{f' -c {config_path}' if config_path else ''}",
              file=sys.stderr)
        status = 3  # start-up reads the journal before it opens any listener
    return status


def try_listen(bind: str, port: int) -> OSError | None:
    """Bind (bind, port) as the broker would, then let go; the error, if any. No listen():
    on Linux a bind with SO_REUSEADDR already fails on a port another socket listens on,
    and a check must never accept a connection, not even for an instant."""
    if port == 0:
        return None  # any free port: nothing to collide with
    try:
        infos = socket.getaddrinfo(bind, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return exc
    family, kind, proto, _name, address = infos[0]
    try:
        with socket.socket(family, kind, proto) as sock:
            # As gevent's StreamServer does: a port with connections in TIME_WAIT is free.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
    except OSError as exc:
        return exc
    return None


def journal_damage(config: Config) -> str | None:
    """The journal's damage as start-up would report it, or None (a torn tail is no damage:
    start-up truncates it, keeping a copy)."""
    if not config.persistence.enabled:
        return None
    path = os.path.join(config.broker.data_dir, JOURNAL_NAME)
    if not os.path.exists(path):
        return None
    try:
        found = scan_journal(path)
    except OSError as exc:
        return f"cannot read the session journal {path}: {exc.strerror}"
    if found.damage is None:
        return None
    offset, reason = found.damage
    return f"the session journal {path} is damaged at offset {offset} ({reason})"
