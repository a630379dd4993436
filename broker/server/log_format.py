"""The broker's log lines: one event per line, in the form whoever reads stderr understands.

- `text` (the default): `time LEVEL logger: message`. When stderr is the systemd journal,
  each line starts with its syslog priority (`<3>` error, `<4>` warning, `<6>` info, `<7>`
  debug; sd-daemon(3)) and carries no time (journald stamps every line), so
  `journalctl -u greenfly -p warning` filters by level.
- `json`: one object per line — `time`, `level`, `logger`, `message`, `exception` when there
  is one, and the structured fields a call passes in `extra` (`client_id`, ...) — for log
  shippers. On the journal it gets the priority prefix too.

One event stays one line: a traceback's newlines, and any control character a client put in
its id or topic, are escaped (`\\n`, `\\x1b`) in text, and JSON escapes them itself. That also
keeps a client from writing a fake log line into the log.

"stderr is the journal" is decided as systemd.exec(5) says for `JOURNAL_STREAM`: the variable
holds the device and inode of the stream systemd connected, and it counts only when they are
stderr's own, since a child may inherit the variable with its stderr sent elsewhere.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
JOURNAL_TEXT_FORMAT = "%(levelname)s %(name)s: %(message)s"  # journald adds the time

# Python level -> syslog priority (RFC 5424: 3 err, 4 warning, 5 notice, 6 info, 7 debug).
PRIORITY = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4),
            (logging.INFO, 6))
DEBUG_PRIORITY = 7

# Every C0 control character but tab, and DEL, as an escape; newline and return as \n, \r.
_ESCAPES = {code: f"\\x{code:02x}" for code in [*range(32), 127] if code != 9}
_ESCAPES.update({10: "\\n", 13: "\\r"})

# What every LogRecord has: anything else on a record came from `extra=` and is a field.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


def priority(levelno: int) -> int:
    for threshold, value in PRIORITY:
        if levelno >= threshold:
            return value
    return DEBUG_PRIORITY


def one_line(text: str) -> str:
    return text.translate(_ESCAPES)


def stream_is_journal(stream: TextIO, environ: Mapping[str, str] = os.environ) -> bool:
    """Whether `stream` is the journal stream systemd named in JOURNAL_STREAM (dev:inode)."""
    device, _, inode = environ.get("JOURNAL_STREAM", "").partition(":")
    if not (device.isdigit() and inode.isdigit()):
        return False
    try:
        status = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):  # closed, or not a file at all
        return False
    return (status.st_dev, status.st_ino) == (int(device), int(inode))


class TextFormatter(logging.Formatter):
    def __init__(self, journal: bool) -> None:
        super().__init__(JOURNAL_TEXT_FORMAT if journal else TEXT_FORMAT)
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        line = one_line(super().format(record))
        return f"<{priority(record.levelno)}>{line}" if self.journal else line


class JsonFormatter(logging.Formatter):
    def __init__(self, journal: bool) -> None:
        import json  # here: a text log (the default) starts without it

        super().__init__()
        self.journal = journal
        self._dumps = json.dumps

    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                event[key] = value
        if record.exc_info:
            event["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            event["stack"] = self.formatStack(record.stack_info)
        line = self._dumps(event, ensure_ascii=False, default=str)
        return f"<{priority(record.levelno)}>{line}" if self.journal else line


def configure(level: str, log_format: str = "text", stream: TextIO | None = None) -> bool:
    """Send the root logger's records to `stream` (stderr) at `level` in `log_format`;
    True when that stream is the journal (the lines carry priorities)."""
    stream = stream if stream is not None else sys.stderr
    journal = stream_is_journal(stream)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter(journal) if log_format == "json"
                         else TextFormatter(journal))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level.upper())
    return journal


def log_uncaught(hub: Any) -> None:
    """Errors nothing caught — in a greenlet (gevent's hub prints those to stderr itself,
    traceback over many lines) or in the main thread — go through the log as one event."""
    failed = logging.getLogger("greenfly.uncaught")

    def hub_report(context: Any, kind: Any, value: Any, tb: Any) -> None:
        failed.error("%s failed", context, exc_info=(kind, value, tb))

    def main_report(kind: Any, value: Any, tb: Any) -> None:
        failed.critical("uncaught error", exc_info=(kind, value, tb))

    hub.print_exception = hub_report
    sys.excepthook = main_report
