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
from ..store.salvage import Resynced, describe, losses


def register(commands: Any, config_option: argparse.ArgumentParser) -> None:
    inspect = commands.add_parser("inspect", parents=[config_option],
                                  help="print the sessions and retained messages in the journal")
    inspect.add_argument("-d", "--data-dir", help="data directory (instead of -c)")
    inspect.set_defaults(handler=_inspect_handler)
    commands.choices["check"].add_argument(
        "--salvage", action="store_true",
        help="repair a damaged journal: keep every intact record, before and after the "
        "damage, and say what was lost (the original is copied aside first)")


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
    running = note_running_broker(data_dir) is not None
    if found.torn_tail:
        print(f"  torn final frame: {found.torn_tail} bytes at offset {found.good_end} "
              "(truncated at the next start)")
    if found.damage:
        offset, reason = found.damage
        print(f"  DAMAGED at offset {offset}: {reason}; records after it are not shown "
              "(`greenfly check --salvage` keeps every intact record, before and after it)")
    print(f"sessions: {len(state.sessions)}")
    for session in sorted(state.sessions.values(), key=lambda s: s.client_id):
        inflight = sum(1 for e in session.outgoing.values() if e.packet_id)
        queued = len(session.outgoing) - inflight
        # The journal says connected; the data_dir lock says whether that is now or was at
        # the last stop (a kill -9 or a crash, which a restart would see the same way).
        status = ("offline" if session.disconnected_at is not None else
                  "online now (its broker is running)" if running else "connected at the stop")
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
        found, kept, backup = salvage(path)
    except ValueError as exc:
        print(f"greenfly: cannot salvage: {exc}", file=sys.stderr)
        return 1
    finally:
        lock.release()
    if kept is None or backup is None:
        print(f"{path}: not damaged, nothing to salvage ({len(found.records)} records)")
        return 0
    for line in salvage_report(path, kept, backup):
        print(line, file=sys.stderr)
    return 0


def salvage_report(path: str, kept: Resynced, backup: str) -> list[str]:
    """What salvage did, in bytes and then in the user's terms: sessions, messages, topics."""
    out = [f"{path}: salvaged. The original is saved as {backup}."]
    lost_bytes = 0
    for damage in kept.damage:
        size = damage.end - damage.start
        where = f"  offset {damage.start} ({damage.reason}), {size} bytes: "
        if damage.recovered is not None:
            out.append(where + "only the length field was damaged; the record itself is "
                       f"intact (its CRC matches) and kept: {describe(damage.recovered)}")
            continue
        lost_bytes += size
        if damage.torn:
            out.append(where + "a final record cut short by a crash mid-write (never "
                       "acknowledged), dropped")
            continue
        guess = ("; it held, probably, " + "; ".join(describe(r) for r in damage.probably)
                 if damage.probably else "")
        out.append(where + f"damaged, dropped{guess}")
    out.append(f"kept {len(kept.records)} intact record(s), {kept.after_damage} of them after "
               f"the damage; dropped {lost_bytes} bytes")
    lost = losses(kept.records).lines()
    guessed = [record for damage in kept.damage for record in damage.probably]
    if lost or guessed:
        out.append("what was lost, as the records that survive tell it:")
        out += [f"  {line}" for line in lost]
        out += [f"  probably {describe(record)} (its record failed its CRC)"
                for record in guessed]
    elif any(not damage.recovered and not damage.torn for damage in kept.damage):
        out.append("what was lost: nothing the surviving records refer to (an acknowledgement "
                   "or a subscription change may be among the dropped bytes)")
    else:
        out.append("nothing acknowledged was lost")
    return out
