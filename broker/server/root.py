"""`Broker`: the composition root. Builds everything, restores, starts, stops.

Start order: load the store and restore sessions and retained messages *before* any listener
opens (so a reconnecting client finds its session), then open the listeners, then start
`$SYS` and the watchdog. Only what the configuration uses is imported: the HTTP listener
(gevent.pywsgi, prometheus_client, the admin API) with a `protocol = "http"` listener, the
bridges with a `[[bridge]]`, Redis with `[cluster]`; what waits for first use (the hash
threads, libc's malloc_trim) is not made before the ports accept; malloc_trim is looked up
right after (server/memory.py). Stop order: close the
listeners, close every connection (server shutdown), then close the store so everything
appended is flushed.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import gevent
from gevent.event import Event

from ..config.bind_errors import bind_failure
from ..config.schema import Config
from ..core.context import BrokerContext
from ..core.protocol import AWAIT_CONNECT, CONNECT_TIMEOUT, KEEPALIVE_TIMEOUT, SERVER_SHUTDOWN
from ..link.connection import Connection
from ..link.outbox import Flusher
from ..net.tls import build_ssl_context
from ..net.transport import Transport
from ..store.base import SessionStore
from ..store.memory import MemoryStore
from .bridges import Bridges
from .hash_pool import HashPool
from .journal_writer import JournalStore
from .listeners import Listener
from .login_throttle import LoginThrottle
from .memory import MemoryReturn
from .notify import Notifier
from .security import ListenerSecurity
from .sys_topics import SysTopics

if TYPE_CHECKING:
    from ..cluster.node import ClusterNode
    from .http_listener import HttpListener

log = logging.getLogger("greenfly")

WATCHDOG_INTERVAL = 0.25  # deadlines are enforced within this many seconds


class Broker:
    def __init__(self, config: Config, store: SessionStore | None = None) -> None:
        self.config = config
        self.cluster: ClusterNode | None = None
        if store is None and config.cluster is not None:
            from ..cluster.node import ClusterNode  # Redis is imported only with [cluster]
            self.cluster = ClusterNode.create(config.cluster, config.limits.max_queued_messages)
            store = self.cluster.store
        self.store = store if store is not None else make_store(config)
        self.ctx = BrokerContext.build(config, self.store)
        if self.cluster is not None:
            self.cluster.attach(self.ctx)
        if isinstance(self.store, JournalStore):
            registry, retained = self.ctx.registry, self.ctx.retained
            self.store.snapshot_source = lambda: registry.snapshot_records(retained)
        self.connections: set[Connection] = set()
        self.flusher = Flusher()
        self._closed_callback = self._connection_closed  # one bound method for every connection
        self.failures = LoginThrottle()
        self.memory = MemoryReturn()  # glibc's free pages back to the system after closes
        self.hash_pool = HashPool(config.broker.hash_threads, config.broker.hash_queue)
        self.listeners = [Listener(listener, self._serve, lambda: self.ctx.config,
                                   ListenerSecurity.build(config, listener, self.failures,
                                                          self.hash_pool))
                          for listener in config.listeners if listener.protocol != "http"]
        self.stopping = False  # /readyz says 503 from the moment stop() begins
        self.http_listeners: list[HttpListener] = []
        if any(listener.protocol == "http" for listener in config.listeners):
            from .http_listener import HttpListener  # prometheus_client, pywsgi: only with it

            self.http_listeners = [HttpListener(listener, self)
                                   for listener in config.listeners
                                   if listener.protocol == "http"]
        self.sys_topics = SysTopics(self.ctx)
        self.bridges = Bridges(self.ctx, config)
        self._stopped = Event()
        self._tasks: list[gevent.Greenlet] = []
        self.notify = Notifier.from_environ()  # systemd's READY=1/STOPPING=1/WATCHDOG=1

    def start(self) -> None:
        state = self.store.load()
        sessions, retained = len(state.sessions), len(state.retained)
        # Released as restored: the stored form and the live one never both whole.
        self.ctx.registry.restore(state, self.ctx.retained, release=True)
        del state
        if sessions or retained:
            log.info("restored %d persistent session(s), %d retained message(s)", sessions,
                     retained)
        if self.cluster is not None:
            self.cluster.start()  # the other nodes' routes before any client publishes
        self.bridges.start()  # their subscriptions in place before any client publishes
        for listener in [*self.listeners, *self.http_listeners]:
            try:
                listener.start()
            except OSError as exc:  # port in use, address not ours: say which [[listener]]
                index = next(i for i, item in enumerate(self.config.listeners)
                             if item is listener.config)
                raise bind_failure(self.config, index, exc) from None
        self.sys_topics.start()
        self._tasks = [gevent.spawn(self._watchdog), gevent.spawn(self._expire_sessions),
                       gevent.spawn(self._report_drops), gevent.spawn(self.memory.prepare)]
        self._tasks += self.notify.ready("; ".join(
            item.describe() for item in [*self.listeners, *self.http_listeners]))

    def serve_forever(self) -> None:
        self.start()
        self._stopped.wait()

    def stop(self) -> None:
        """Stop accepting, close every connection, flush the store. Idempotent."""
        if self._stopped.is_set():
            return
        self.stopping = True
        self.notify.stopping()
        log.info("shutting down: closing %d connection(s)", len(self.connections))
        for listener in self.listeners:
            listener.stop()
        for http in self.http_listeners:
            http.stop()
        self.sys_topics.stop()
        self.bridges.stop()
        for task in self._tasks:
            task.kill(block=False)
        for connection in list(self.connections):
            connection.terminate(SERVER_SHUTDOWN)
        if self.cluster is not None:
            self.cluster.stop()  # the store with it
        else:
            self.store.close()
        self.ctx.env.drops.flush()  # the drops since the last report, before the process goes
        self.hash_pool.close()
        self._stopped.set()
        log.info("stopped")

    def reconfigure(self, config: Config) -> None:
        """Apply a reloaded configuration without dropping anyone. Password and ACL files and
        TLS certificates are read first: if any is bad, ConfigError and nothing changes."""
        by_address = {(item.bind, item.port): item for item in config.listeners}
        updates = []
        for listener in self.listeners:
            new = by_address.get((listener.config.bind, listener.config.port), listener.config)
            updates.append((listener, ListenerSecurity.build(config, new, self.failures,
                                                             self.hash_pool),
                            build_ssl_context(new)))
        self.bridges.reconfigure(config)
        self.config = config
        self.hash_pool.resize(config.broker.hash_threads, config.broker.hash_queue)
        self.ctx.reconfigure(config)
        for listener, security, ssl_context in updates:
            listener.reconfigure(security, ssl_context)
        for connection in list(self.connections):
            connection.protocol.refresh_rules()

    def cluster_metrics(self) -> dict[str, tuple[str, float]]:
        return self.cluster.metrics() if self.cluster is not None else {}

    def _serve(self, transport: Transport, listener: Listener, identity: str | None) -> None:
        connection = Connection(self.ctx, transport, listener, identity,
                                on_closed=self._closed_callback, flusher=self.flusher)
        self.connections.add(connection)
        connection.run()

    def _connection_closed(self, connection: Connection) -> None:
        self.connections.discard(connection)
        self.memory.closed += 1
        if self.cluster is not None and connection.protocol.client_id:
            self.cluster.connection_closed(connection.protocol.client_id)
        listener = connection.protocol.source
        if isinstance(listener, Listener):
            listener.connection_closed()

    def _watchdog(self) -> None:
        """Close connections past their deadline: no CONNECT in time, or keepalive expired."""
        ticks = 0
        while True:
            gevent.sleep(WATCHDOG_INTERVAL)
            now = time.monotonic()
            ticks += 1
            if ticks % 4 == 0:  # once a second is plenty for idle writers
                for connection in self.connections:
                    connection.reap_idle_writer(now)
                self.memory.tick()
            for will in self.ctx.wills.due(now):  # MQTT 5 wills whose delay has passed
                self.ctx.router.publish(will)
            for connection in [c for c in self.connections if c.deadline <= now]:
                if connection.closed is None:
                    late = connection.protocol.state is AWAIT_CONNECT
                    if late:
                        log.info("closing %s: no CONNECT within %gs", connection.transport.address,
                                 self.config.broker.connect_timeout)
                    connection.terminate(CONNECT_TIMEOUT if late else KEEPALIVE_TIMEOUT)

    def _report_drops(self) -> None:
        """Every `drop_log_interval`: one line per client with the drops not said yet, so a
        burst is reported in full without waiting for a later drop."""
        while True:
            gevent.sleep(self.config.log.drop_log_interval)
            self.ctx.env.drops.flush()

    def _expire_sessions(self) -> None:
        """Discard persistent sessions offline for longer than persistent_client_expiration."""
        while True:
            expiration = self.config.broker.persistent_client_expiration
            # A quarter of the expiration (bounded): a session goes at most that late.
            # MQTT 5 sessions carry their own expiry, down to one second: look every second.
            gevent.sleep(max(0.5, min(1.0, expiration / 4)) if expiration else 1.0)
            self.ctx.registry.expire(self.config.broker.persistent_client_expiration)


def make_store(config: Config) -> SessionStore:
    """The journal in data_dir, or memory only when persistence is off."""
    persistence = config.persistence
    if not persistence.enabled:
        return MemoryStore()
    return JournalStore(config.broker.data_dir, persistence.fsync, persistence.fsync_interval_ms,
                        persistence.compact_min_mb * 1024 * 1024, persistence.compact_factor)
