"""`Positions`: which entries of each owned session's log this node has seen.

Every write to a session's log takes the next position (the session hash's `seq`): the
owner's own writes tell it theirs in the reply, a publisher elsewhere tells it in the
notification. What has been seen is every position up to `known` plus a few beyond it
(`ahead`, notifications that overtook a reply); a notification for a position already seen
is a repeat, and after the pub/sub link was down the log itself shows what was missed.
"""

from __future__ import annotations


class Positions:
    def __init__(self) -> None:
        self.known: dict[str, int] = {}  # client id -> every log position up to this is seen
        self.ahead: dict[str, set[int]] = {}  # ... and these beyond it
        self.written: dict[str, int] = {}  # client id -> log entries since its compaction

    def start(self, client_id: str, seq: int) -> None:
        """The log as read at a claim (or adoption) ends at `seq`."""
        self.known[client_id] = seq
        self.ahead.pop(client_id, None)

    def forget(self, client_id: str) -> None:
        self.known.pop(client_id, None)
        self.ahead.pop(client_id, None)
        self.written.pop(client_id, None)

    def was_seen(self, client_id: str, pos: int) -> bool:
        return pos <= self.known.get(client_id, 0) or pos in self.ahead.get(client_id, ())

    def seen(self, client_id: str, pos: int) -> None:
        known = self.known.get(client_id)
        if known is None or pos <= known:
            return
        ahead = self.ahead.get(client_id)
        if pos != known + 1:
            if ahead is None:
                ahead = self.ahead[client_id] = set()
            ahead.add(pos)
            return
        known = pos
        while ahead and known + 1 in ahead:
            known += 1
            ahead.discard(known)
        self.known[client_id] = known
        if ahead is not None and not ahead:
            del self.ahead[client_id]

    def count_written(self, client_id: str) -> int:
        """One more entry since the last compaction; how many now."""
        written = self.written[client_id] = self.written.get(client_id, 0) + 1
        return written
