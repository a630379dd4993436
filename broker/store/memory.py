"""`MemoryStore`: the session store when persistence is off — records kept in a list.

Everything is durable the moment it is appended (there is no disk to wait for), and nothing
survives the process. The list is compacted with the same fold the journal uses
(`snapshot(restore(records))`) whenever it has grown to several times the live state, so
memory stays proportional to what is live, and `load()` on a store that was written to gives
back exactly the state a restart from a journal would.
"""

from __future__ import annotations

from collections.abc import Callable

from .base import StoredState, restore, snapshot
from .records import MessageStored, Record

_COMPACT_FACTOR = 4
_COMPACT_MINIMUM = 10_000


class MemoryStore:
    self_contained = False  # one log for all sessions: messages are shared by reference

    def __init__(self) -> None:
        self._records: list[Record] = []
        self._live = 0  # records in the last snapshot
        self.seq = 0  # number of the last record appended
        self.failure: str | None = None  # memory never fails to take a record
        self._max_msg_id = 0

    def load(self) -> StoredState:
        state = restore(self._records)
        self._max_msg_id = max(self._max_msg_id, state.max_msg_id)
        return state

    def append(self, record: Record) -> int:
        self._records.append(record)
        self.seq += 1
        # Never compact right after a MessageStored: the records that refer to it (an
        # OutgoingStored, a RetainedSet) come next, and the fold would drop it as unreferenced.
        if (type(record) is not MessageStored
                and len(self._records) > max(_COMPACT_MINIMUM, _COMPACT_FACTOR * self._live)):
            self.compact()
        return self.seq

    def compact(self) -> None:
        self._records = snapshot(restore(self._records))
        self._live = len(self._records)

    def records(self) -> list[Record]:
        return list(self._records)

    def new_message_id(self) -> int:
        self._max_msg_id += 1
        return self._max_msg_id

    def is_durable(self, seq: int) -> bool:
        return True

    def wait_durable(self, seq: int) -> None:
        return None

    def on_durable(self, seq: int, callback: Callable[[], None]) -> None:
        callback()

    def close(self) -> None:
        return None
