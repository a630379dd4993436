"""What Redis's own settings mean for the cluster's promise, in words: pure, for the broker's
start-up log and `greenfly check` alike.

The cluster acknowledges a QoS 1/2 message once Redis has answered the write; that answer
means "on disk" only with `appendonly yes` and `appendfsync always` (Redis fsyncs before it
replies, once per event-loop turn: a group commit). With `everysec` a Redis crash loses up
to a second of acknowledged messages; with AOF off, everything since the last snapshot.
"""

from __future__ import annotations


def durability_warnings(appendonly: str | None, appendfsync: str | None) -> list[str]:
    """Warnings for Redis's `appendonly` and `appendfsync` (None: could not be read)."""
    if appendonly is None or appendfsync is None:
        return ["could not read Redis's appendonly/appendfsync (CONFIG GET refused?): make "
                "sure it runs with appendonly yes and appendfsync always, or a Redis crash "
                "can lose acknowledged messages"]
    if appendonly != "yes":
        return ["Redis runs with appendonly no: a Redis crash loses every acknowledged "
                "message since its last snapshot; set appendonly yes and appendfsync always "
                "(deploy/cluster/redis-greenfly.conf)"]
    if appendfsync != "always":
        return [f"Redis runs with appendfsync {appendfsync}: a Redis crash can lose "
                "acknowledged messages (up to a second's with everysec); set appendfsync "
                "always (deploy/cluster/redis-greenfly.conf)"]
    return []
