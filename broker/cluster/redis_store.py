"""`RedisStore`: the `SessionStore` a cluster node runs on, one log per session in Redis.

The state machine writes the same records it writes to the journal; this store sends each to
its session's list through a fenced script (cluster/scripts.py), in order, grouped by the
`GroupWriter` into one pipeline per hub loop iteration: with Redis's `appendfsync always`
that is a group commit, and a record is durable once its reply is in. Acknowledgements wait
for that exactly as they wait for the journal's fsync.

What comes back is the cluster's business, handed to the node through `events`:
- an owner write refused by the fence: another node took the session (`fenced`);
- a message owed appended while another node owns the session: that node must be told
  (`appended_elsewhere`);
- the position each write took in the session's log (`position`), so the owner knows which
  entries it has seen.

Retained messages are one hash for the whole cluster; setting one also tells every node.
"""

from __future__ import annotations

import heapq
import itertools
import logging
from collections.abc import Callable
from typing import Any, Protocol

import gevent
from gevent.event import Event

from ..errors import StoreUnavailable
from ..store.base import StoredState
from ..store.record_codec import decode_record, encode_record
from ..store.records import (
    MessageQueued,
    MessageStored,
    Record,
    RetainedCleared,
    RetainedSet,
    SessionDeleted,
    SessionOpened,
    Subscribed,
    Unsubscribed,
)
from . import scripts
from .keys import Keys
from .redis_link import GroupWriter, RedisLink, RedisUnavailable
from .wire import pairs

log = logging.getLogger("greenfly.cluster.store")

ID_BLOCK = 1 << 16  # message ids taken from Redis at a time (one INCRBY per 65,536 messages)


class StoreEvents(Protocol):
    def fenced(self, client_id: str, epoch: int) -> None: ...
    def appended_elsewhere(self, client_id: str, pos: int, owner: str, record: bytes) -> None: ...
    def position(self, client_id: str, pos: int) -> None: ...
    def redis_state(self, up: bool) -> None: ...


class RedisStore:
    self_contained = True  # one log per session: each holds its messages whole

    def __init__(self, link: RedisLink, keys: Keys, owner: str, queue_cap: int = 0) -> None:
        self.link = link
        self.keys = keys
        self.owner = owner
        self.queue_cap = queue_cap
        self.writer = GroupWriter(link, self._writer_state)
        self.events: StoreEvents | None = None
        self.epochs: dict[str, int] = {}  # client id -> the epoch this node holds it at
        self.seq = 0
        self.durable_seq = 0
        self.failure: str | None = None
        self._round = Event()
        # (seq, tie, callback), a heap: replies come one command at a time
        self._on_durable: list[tuple[int, int, Callable[[], None]]] = []
        self._tie = itertools.count()
        self._write = link.script(scripts.WRITE)
        self._retain = link.script(scripts.RETAIN)
        self._stored: dict[int, MessageStored] = {}  # retained messages awaiting RetainedSet
        self._next_id = 0
        self._last_id = 0
        self._refilling = False
        self.dropped_full = 0  # messages not appended: the session's log was at its cap
        self.pending: dict[str, int] = {}  # client id -> its writes not answered yet

    # -- SessionStore --------------------------------------------------------------------------

    def load(self) -> StoredState:
        """The retained messages; sessions are loaded one at a time, when claimed."""
        state = StoredState()
        self._take_id_block()
        for topic, blob in pairs(self.link.call("HGETALL", self.keys.retained)).items():
            record = decode_record(blob)
            if isinstance(record, MessageStored):
                record.msg_id = self.new_message_id()
                state.messages[record.msg_id] = record
                state.retained[topic.decode()] = record.msg_id
        return state

    def new_message_id(self) -> int:
        if self._next_id >= self._last_id:
            self._take_id_block()
        elif self._last_id - self._next_id < ID_BLOCK // 4 and not self._refilling:
            self._refilling = True
            gevent.spawn(self._refill)
        self._next_id += 1
        return self._next_id

    def _take_id_block(self) -> None:
        last = int(self.link.call("INCRBY", self.keys.message_ids, ID_BLOCK))
        self._next_id, self._last_id = last - ID_BLOCK, last

    def _refill(self) -> None:
        try:
            last = int(self.link.call("INCRBY", self.keys.message_ids, ID_BLOCK))
        except RedisUnavailable:
            return
        finally:
            self._refilling = False
        if self._next_id >= self._last_id - ID_BLOCK // 4:
            self._next_id, self._last_id = last - ID_BLOCK, last

    def append(self, record: Record) -> int:
        self.seq += 1
        seq = self.seq
        match record:
            case MessageQueued():
                cid = record.client_id
                blob = encode_record(record)
                self._submit(seq, self._session_write(cid, "q", blob),
                             lambda result: self._owed_written(cid, blob, result))
            case RetainedSet():
                stored = self._stored.pop(record.msg_id, None)
                if stored is None:
                    self._submit(seq, ("ECHO", b""), None)
                else:
                    blob = encode_record(stored)
                    self._submit(seq, self._retain.command(
                        [self.keys.retained],
                        [record.topic, blob, self.keys.retained_changes,
                         b"S" + self.owner.encode() + b"\0" + blob]), None)
            case RetainedCleared():
                self._submit(seq, self._retain.command(
                    [self.keys.retained],
                    [record.topic, b"", self.keys.retained_changes,
                     b"C" + self.owner.encode() + b"\0" + record.topic.encode()]), None)
            case MessageStored():
                self._stored[record.msg_id] = record  # the RetainedSet that follows writes it
                self._submit(seq, ("ECHO", b""), None)
            case _:
                cid = record.client_id
                op = _OPS.get(type(record), "r")
                topic_filter = getattr(record, "topic_filter", "")
                self._submit(seq, self._session_write(cid, op, encode_record(record),
                                                      topic_filter),
                             lambda result: self._owner_written(cid, result))
        return seq

    def submit(self, command: tuple[Any, ...]) -> int:
        """A command of the cluster's own (a route, a will) in the same order and group
        commit as the records: what waits for its number waits for it too."""
        self.seq += 1
        self._submit(self.seq, command, None)
        return self.seq

    def is_durable(self, seq: int) -> bool:
        return seq <= self.durable_seq

    def wait_durable(self, seq: int) -> None:
        while self.durable_seq < seq:
            if self.failure is not None:
                raise StoreUnavailable(f"Redis cannot be written: {self.failure}")
            self._round.wait()

    def on_durable(self, seq: int, callback: Callable[[], None]) -> None:
        if seq <= self.durable_seq:
            callback()
        else:
            heapq.heappush(self._on_durable, (seq, next(self._tie), callback))

    def close(self) -> None:
        self.writer.close()

    # -- writing -------------------------------------------------------------------------------

    def _session_write(self, client_id: str, op: str, blob: bytes,
                       topic_filter: str = "") -> tuple[Any, ...]:
        self.pending[client_id] = self.pending.get(client_id, 0) + 1
        return self._write.command(
            self.keys.session_keys(client_id),
            [self.epochs.get(client_id, 0), op, blob, topic_filter, client_id,
             self.keys.psubs_changes, self.queue_cap])

    def _submit(self, seq: int, command: tuple[Any, ...],
                then: Callable[[Any], None] | None) -> None:
        def done(result: Any) -> None:
            if isinstance(result, Exception):
                log.error("cluster store: %s refused: %s", command[0], result)
            if then is not None:
                then(result)
            self.durable_seq = seq
            self._release_waiters()
        self.writer.submit(command, done)

    def _written(self, client_id: str) -> None:
        left = self.pending.get(client_id, 0) - 1
        if left > 0:
            self.pending[client_id] = left
        else:
            self.pending.pop(client_id, None)

    def _owed_written(self, client_id: str, blob: bytes, result: Any) -> None:
        self._written(client_id)
        events = self.events
        if events is None or not isinstance(result, list):
            return
        kind = result[0]
        if kind == b"F":
            events.appended_elsewhere(client_id, int(result[1]), result[2].decode(), blob)
        elif kind == b"O":
            events.position(client_id, int(result[1]))
        elif kind == b"full":
            self.dropped_full += 1
            if self.dropped_full % 1000 == 1:  # the first, then every thousandth
                log.warning("queue of %s in Redis is full (%d entries): a message was dropped "
                            "(%d so far)", client_id, self.queue_cap, self.dropped_full)

    def _owner_written(self, client_id: str, result: Any) -> None:
        self._written(client_id)
        events = self.events
        if events is None or not isinstance(result, list):
            return
        if result[0] == b"fenced":
            events.fenced(client_id, int(result[1]))
        elif result[0] == b"O" and int(result[1]):
            events.position(client_id, int(result[1]))

    def link_lost(self) -> None:
        """The pub/sub connection to Redis broke: count Redis as gone now, so that nothing
        is acknowledged that may not be durable, even before a write fails."""
        if self.failure is None:
            self._writer_state(False)

    def link_back(self) -> None:
        """The pub/sub connection is back; writes too, unless the writer still fails."""
        if self.failure is not None and self.writer.up:
            self._writer_state(True)

    def _writer_state(self, up: bool) -> None:
        if up:
            if self.failure is not None:
                log.warning("Redis is back: QoS 1/2 and persistent sessions work again")
            self.failure = None
        else:
            self.failure = "Redis unavailable"
            log.error("REDIS UNAVAILABLE: QoS 1/2 publishes and new persistent sessions are "
                      "refused until it is back; QoS 0 and clean sessions keep working here.")
            self._release_waiters()
        if self.events is not None:
            self.events.redis_state(up)

    def _release_waiters(self) -> None:
        done, self._round = self._round, Event()
        done.set()
        heap = self._on_durable
        due: list[Callable[[], None]] = []
        if self.failure is not None:  # every waiter learns of it, and fails its connection
            due = [callback for _seq, _tie, callback in heap]
            heap.clear()
        else:
            durable = self.durable_seq
            while heap and heap[0][0] <= durable:
                due.append(heapq.heappop(heap)[2])
        for callback in due:
            try:
                callback()
            except Exception:  # one connection's trouble must not stop the store
                log.exception("durability callback failed")


_OPS: dict[type, str] = {SessionOpened: "o", Subscribed: "s", Unsubscribed: "u",
                         SessionDeleted: "d"}
