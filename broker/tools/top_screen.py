"""`greenfly top`: the status page's numbers and client table in a terminal, once a second.

Plain ANSI rather than curses: the whole screen is written again each second (the alternate
screen, cursor home, each line cleared to its end), which any terminal, tmux or ssh session
shows the same, and which needs no terminfo entry on a minimal VPS. The keyboard is read in
cbreak mode, so `q` quits at once without Enter; the terminal is put back however it ends.
A broker that stops answering is said on the screen, and the view goes on trying.
"""

from __future__ import annotations

import os
import select
import shutil
import sys
import termios
import time
import tty
from datetime import UTC, datetime
from typing import Any, TextIO

from .admin_client import AdminClient, AdminError
from .client_table import client_table, duration

REFRESH = 1.0
ENTER, LEAVE = "\x1b[?1049h\x1b[?25l", "\x1b[?25h\x1b[?1049l"  # alternate screen, cursor
HOME, CLEAR_LINE, CLEAR_BELOW = "\x1b[H", "\x1b[K", "\x1b[J"
BOLD, REVERSE, PLAIN = "\x1b[1m", "\x1b[7m", "\x1b[0m"


def run_top(client: AdminClient, out: TextIO = sys.stdout, keys: TextIO = sys.stdin) -> int:
    if not (out.isatty() and keys.isatty()):
        print("greenfly top: needs a terminal; `greenfly clients` prints the table once",
              file=sys.stderr)
        return 2
    client.overview()  # fails here, before the screen is taken, if the broker is not there
    fd = keys.fileno()
    saved = termios.tcgetattr(fd)
    out.write(ENTER)
    try:
        tty.setcbreak(fd)
        while True:
            started = time.monotonic()
            out.write(frame(client, shutil.get_terminal_size()))
            out.flush()
            if _quit_pressed(fd, started + REFRESH):
                return 0
    except KeyboardInterrupt:
        return 0
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        out.write(LEAVE)
        out.flush()


def _quit_pressed(fd: int, until: float) -> bool:
    """Wait for `until`, reading keys; True once q is pressed."""
    while (left := until - time.monotonic()) > 0:
        ready, _, _ = select.select([fd], [], [], left)
        if ready and os.read(fd, 64).lower().count(b"q"):
            return True
    return False


def frame(client: AdminClient, size: os.terminal_size) -> str:
    """One screen: the numbers, then as many client rows as fit."""
    try:
        lines = summary(client.url, client.overview())
        page = client.clients(limit=max(1, size.lines - len(lines) - 3))
    except AdminError as exc:
        lines = [f"{BOLD}greenfly top{PLAIN}  {client.url}", "", f"{exc}",
                 "(retrying every second; q quits)"]
    else:
        table = client_table(page["items"], datetime.now(UTC))
        lines += ["", REVERSE + table[0].ljust(size.columns)[:size.columns] + PLAIN]
        lines += [row[:size.columns] for row in table[1:]]
        if page["total"] > len(page["items"]):
            lines.append(f"... and {page['total'] - len(page['items'])} more")
    lines = lines[:size.lines]
    return HOME + "".join(line + CLEAR_LINE + "\r\n" for line in lines[:-1]) + \
        lines[-1] + CLEAR_LINE + CLEAR_BELOW


def summary(url: str, view: dict[str, Any]) -> list[str]:
    rates = view.get("rates") or []
    rate_in, rate_out = (rates[-1][1], rates[-1][2]) if rates else (0.0, 0.0)
    dropped = view.get("dropped") or {}
    drops = sum(dropped.values())
    why = ", ".join(f"{reason} {count}" for reason, count in sorted(dropped.items()) if count)
    ready = "ready" if view.get("ready") else f"NOT READY: {view.get('journal_failure') or ''}"
    fsync = view.get("fsync_avg_seconds")
    journal = view.get("journal_bytes")
    return [
        f"{BOLD}greenfly top{PLAIN}  {url}  up {duration(view.get('uptime', 0))}  {ready}"
        "   (q quits)",
        "",
        f"clients   online {view['clients_online']}  offline {view['clients_offline']}"
        f"   subscriptions {view['subscriptions']}   retained {view['retained']}",
        f"messages  in {rate_in:.1f}/s  out {rate_out:.1f}/s"
        f"   received {view['messages_received']}  sent {view['messages_sent']}",
        f"queues    queued {view['queued']}  inflight {view['inflight']}"
        f"   dropped {drops}" + (f" ({why})" if why else ""),
        "journal   " + (_size(journal) if journal is not None else "in memory") +
        (f"   fsync avg {fsync * 1000:.2f} ms" if fsync is not None else ""),
    ]


def _size(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count} B"
