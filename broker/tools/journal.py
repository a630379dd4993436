"""`greenfly inspect` and `greenfly check --salvage`: the journal, read without a broker.

Both read without the data directory's lock (a running broker keeps it) and say when a
broker is running there; salvage, which rewrites the journal, takes the lock and refuses
while a broker holds it.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from ..config.loading import load_default, load_file
from ..config.schema import Config
from ..errors import ConfigError
from ..store.base import restore
from ..store.dir_lock import DataDirInUse, DataDirLock, holder
from ..store.journal_file import JOURNAL_NAME, salvage, scan_journal


def register(commands: Any, config_option: argparse.ArgumentParser) -> None:
    inspect = commands.add_parser("inspect", parents=[config_option],
                                  help="print the sessions and retained messages in the journal")
    inspect.add_argument("-d", "--data-dir", help="data directory (instead of -c)")
    inspect.set_defaults(handler=_inspect_handler)
    commands.choices["check"].add_argument(
        "--salvage", action="store_true",
        help="repair a damaged journal: keep every record before the damage (the original "
        "is copied aside first)")


def check_hook(config: Config, args: argparse.Namespace) -> int:
    """`greenfly check --salvage`: repair the journal in the configuration's data_dir."""
    if not config.persistence.enabled:
        return 0
    if not args.salvage:
        note_running_broker(config.broker.data_dir)
        return 0
    return salvage_command(config.broker.data_dir)


def note_running_broker(data_dir: str) -> int | None:
    """Say so when a broker runs on `data_dir`: what is read may change under it."""
    pid = holder(data_dir)
    if pid is not None:
        print(f"  note: a greenfly broker is running on {data_dir} "
              f"({f'PID {pid}' if pid else 'PID unknown'}); its journal is read as it is "
              "now, while it may still be writing")
    return pid


def _inspect_handler(args: argparse.Namespace, path: str | None) -> int:
    data_dir = args.data_dir
    if data_dir is None:
        try:
            data_dir = (load_file(path) if path else load_default()).broker.data_dir
        except ConfigError as exc:
            print(f"greenfly: configuration error: {exc}", file=sys.stderr)
            return 2
    return inspect_command(data_dir)


def inspect_command(data_dir: str) -> int:
    """Print sessions, what each is owed, and retained counts, as a restart would see them."""
    path = os.path.join(data_dir, JOURNAL_NAME)
    if not os.path.exists(path):
        print(f"{path}: no journal (nothing persisted yet)")
        return 0
    found = scan_journal(path)
    state = restore(found.records)
    print(f"{path}: {found.size} bytes, {len(found.records)} records")
    note_running_broker(data_dir)
    if found.torn_tail:
        print(f"  torn final frame: {found.torn_tail} bytes at offset {found.good_end} "
              "(truncated at the next start)")
    if found.damage:
        offset, reason = found.damage
        print(f"  DAMAGED at offset {offset}: {reason}; records after it are not shown "
              "(`greenfly check --salvage` keeps everything before it)")
    print(f"sessions: {len(state.sessions)}")
    for session in sorted(state.sessions.values(), key=lambda s: s.client_id):
        inflight = sum(1 for e in session.outgoing.values() if e.packet_id)
        queued = len(session.outgoing) - inflight
        status = "offline" if session.disconnected_at is not None else "connected at the stop"
        print(f"  {session.client_id}: {status}, {len(session.subscriptions)} subscription(s), "
              f"{inflight} in flight, {queued} queued, "
              f"{len(session.incoming_qos2)} inbound QoS 2 awaiting PUBREL")
    print(f"retained messages: {len(state.retained)}")
    print(f"stored messages: {len(state.messages)}")
    return 1 if found.damage else 0


def salvage_command(data_dir: str) -> int:
    path = os.path.join(data_dir, JOURNAL_NAME)
    if not os.path.exists(path):
        print(f"{path}: no journal, nothing to salvage")
        return 0
    lock = DataDirLock(data_dir)
    try:
        lock.acquire()  # the journal is rewritten: never under a running broker
    except DataDirInUse as exc:
        print(f"greenfly: cannot salvage: {exc}; stop it first", file=sys.stderr)
        return 1
    try:
        found, backup = salvage(path)
    finally:
        lock.release()
    if backup is None:
        print(f"{path}: not damaged, nothing to salvage ({len(found.records)} records)")
        return 0
    dropped = found.size - found.good_end
    where = f" at offset {found.damage[0]} ({found.damage[1]})" if found.damage else ""
    print(f"{path}: damaged{where}; kept {len(found.records)} records before it, "
          f"dropped {dropped} bytes. The original is saved as {backup}.", file=sys.stderr)
    return 0
