"""The connected clients as aligned text (`greenfly clients` and `greenfly top`), from the
admin API's client objects."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

# (heading, key in the API's client object); CONNECTED is derived from connected_since.
COLUMNS = (("CLIENT ID", "client_id"), ("ADDRESS", "address"), ("USER", "user"),
           ("PROTOCOL", "protocol"), ("KEEPALIVE", "keepalive"), ("CONNECTED", "connected"),
           ("INFLIGHT", "inflight"), ("QUEUED", "queued"), ("SUBS", "subscriptions"))
NUMERIC = {"keepalive", "inflight", "queued", "subscriptions"}


def client_table(items: Sequence[dict[str, Any]], now: datetime) -> list[str]:
    """The clients as aligned text columns, a heading first."""
    rows = [[heading for heading, _ in COLUMNS]]
    for item in items:
        rows.append([_cell(item, key, now) for _, key in COLUMNS])
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = []
    for row in rows:
        cells = [cell.rjust(width) if key in NUMERIC else cell.ljust(width)
                 for cell, width, (_, key) in zip(row, widths, COLUMNS, strict=True)]
        lines.append("  ".join(cells).rstrip())
    return lines


def _cell(item: dict[str, Any], key: str, now: datetime) -> str:
    if key == "connected":
        since = item.get("connected_since")
        if not since:
            return "-"
        return duration((now - datetime.fromisoformat(since)).total_seconds())
    value = item.get(key)
    return "-" if value is None else str(value)


def duration(seconds: float) -> str:
    """3s, 4m05s, 2h03m, 5d04h: short enough for a column."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86_400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86_400}d{seconds % 86_400 // 3600:02d}h"
