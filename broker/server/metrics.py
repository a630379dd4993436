"""`/metrics`: the broker's own counters in the Prometheus text format.

One custom collector reads, at each scrape, the counters the broker already keeps (`Stats`,
the registry, the topic tree, the retained store, the journal, each listener): there is no
second set of counters to keep in step. prometheus_client only renders them, with its
process collector (CPU, memory, file descriptors) beside. A scrape walks the sessions once
(as `$SYS` does every `sys_interval`), on the hub, without yielding.

Drop reasons: every `Stats` attribute named `publish_dropped_<reason>` is one `reason` label;
what `publish_dropped` counts beyond them is `reason="other"`; expired MQTT 5 messages are
`reason="expired"`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from ..core.stats import LatencyHistogram, Stats
from .runtime_view import Runtime

# The classic text format: what every Prometheus version parses (0.26 names it 1.0.0).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DROPPED_PREFIX = "publish_dropped_"


def drop_reasons(stats: Stats) -> dict[str, int]:
    """Dropped messages by reason, read by name from `Stats` (see the module docstring)."""
    reasons = {name[len(DROPPED_PREFIX):]: getattr(stats, name)
               for name in _slots(stats) if name.startswith(DROPPED_PREFIX)}
    other = stats.publish_dropped - sum(reasons.values())
    if other > 0 or not reasons:
        reasons["other"] = max(other, 0)
    reasons["expired"] = stats.publish_expired
    return reasons


def session_tally(runtime: Runtime) -> tuple[int, int, int, int]:
    """(online, offline, queued, inflight) over every session: what /metrics and the status
    page both show, counted in one walk of the registry."""
    online = offline = queued = inflight = 0
    for session in runtime.ctx.registry:
        if session.peer is None:
            offline += 1
        else:
            online += 1
        queued += len(session.queue)
        inflight += len(session.inflight)
    return online, offline, queued, inflight


def _slots(obj: object) -> Iterator[str]:
    for cls in type(obj).__mro__:
        yield from getattr(cls, "__slots__", ())


class BrokerCollector:
    """Reads the broker's counters at scrape time; `http_auth_failures` counts wrong bearer
    tokens on the HTTP listeners (MQTT login failures are in `Stats`)."""

    def __init__(self, runtime: Runtime, http_auth_failures: Callable[[], int]) -> None:
        self.runtime = runtime
        self.http_auth_failures = http_auth_failures

    def collect(self) -> Iterator[Metric]:
        ctx = self.runtime.ctx
        stats = ctx.stats
        online, offline, queued, inflight = session_tally(self.runtime)

        yield _gauge("clients_connected", "MQTT clients connected now", stats.clients_connected)
        sessions = GaugeMetricFamily("greenfly_sessions", "Sessions by state",
                                     labels=["state"])
        sessions.add_metric(["online"], online)
        sessions.add_metric(["offline"], offline)
        yield sessions
        yield _gauge("subscriptions", "Subscriptions (shared ones included)", ctx.tree.count)
        yield _gauge("retained_messages", "Retained messages", ctx.retained.count)
        yield _gauge("queued_messages", "QoS 1/2 messages waiting for a window place, "
                     "online and offline sessions", queued)
        yield _gauge("inflight_messages", "QoS 1/2 messages sent and not yet acknowledged",
                     inflight)
        yield _counter("messages_received", "PUBLISH packets received", stats.publish_received)
        yield _counter("messages_sent", "PUBLISH packets sent", stats.publish_sent)
        yield _counter("packets_received", "MQTT packets received", stats.messages_received)
        yield _counter("packets_sent", "MQTT packets sent", stats.messages_sent)
        yield _counter("bytes_received", "Bytes received from clients", stats.bytes_received)
        yield _counter("bytes_sent", "Bytes sent to clients", stats.bytes_sent)
        yield _counter("publish_payload_bytes_received", "PUBLISH payload bytes received",
                       stats.publish_bytes_received)
        yield _counter("publish_payload_bytes_sent", "PUBLISH payload bytes sent",
                       stats.publish_bytes_sent)
        yield _labelled_counter("publish_messages_dropped", "Messages not delivered, by reason",
                                "reason", drop_reasons(stats))
        yield _labelled_counter("connections", "Sockets accepted, by listener", "listener",
                                {item.url: item.accepted
                                 for item in self.runtime.listeners})
        yield _counter("connects", "CONNECTs accepted", stats.connections_total)
        yield _labelled_counter("disconnects", "Connections closed, by reason", "reason",
                                stats.disconnects)
        yield _labelled_counter("auth_failures", "Logins refused: MQTT credentials, HTTP bearer "
                                "tokens", "protocol",
                                {"mqtt": stats.auth_failures, "http": self.http_auth_failures()})
        yield _counter("sessions_expired", "Persistent sessions discarded after expiry",
                       stats.clients_expired)
        yield _gauge("uptime_seconds", "Seconds since the broker started", stats.uptime())
        yield from self._journal()
        yield from self._bridges()
        for name, (text, value) in self.runtime.cluster_metrics().items():
            yield _gauge(name, text, value)

    def _bridges(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("greenfly_bridge_up", "1 while the bridge's link to its remote "
                               "is up", labels=["bridge"])
        queued = GaugeMetricFamily("greenfly_bridge_queued_messages", "Messages the bridge "
                                   "holds for the remote: queued plus in flight",
                                   labels=["bridge"])
        connects = CounterMetricFamily("greenfly_bridge_connects", "Links to the remote "
                                       "established (since start or the bridge's last change)",
                                       labels=["bridge"])
        for bridge in self.runtime.bridges:
            owed = bridge.session.owed() if bridge.session is not None else 0
            up.add_metric([bridge.name], int(bridge.state == "connected"))
            queued.add_metric([bridge.name], owed)
            connects.add_metric([bridge.name], bridge.connects)
        yield up
        yield queued
        yield connects

    def _journal(self) -> Iterator[Metric]:
        store = self.runtime.store
        size = getattr(store, "size", None)
        if size is None:  # persistence off: the store is memory
            return
        yield _gauge("journal_bytes", "Size of the journal file", size)
        yield _gauge("journal_write_failing", "1 while journal writes fail (full disk, I/O "
                     "error): QoS 1/2 publishes are refused meanwhile",
                     int(getattr(store, "failure", None) is not None))
        times: LatencyHistogram | None = getattr(store, "fsync_seconds", None)
        if times is not None:
            histogram = HistogramMetricFamily("greenfly_journal_fsync_seconds",
                                              "Duration of each journal fsync")
            buckets = [(_bound(bound), count) for bound, count in times.cumulative()]
            histogram.add_metric([], buckets, times.total)
            yield histogram


def _bound(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"greenfly_{name}", doc, value=value)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(f"greenfly_{name}", doc, value=value)


def _labelled_counter(name: str, doc: str, label: str,
                      values: dict[str, int]) -> CounterMetricFamily:
    family = CounterMetricFamily(f"greenfly_{name}", doc, labels=[label])
    for key, value in sorted(values.items()):
        family.add_metric([key], value)
    return family


class Metrics:
    """The registry one broker's HTTP listeners render: its collector and the process's."""

    def __init__(self, runtime: Runtime, http_auth_failures: Callable[[], int]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(BrokerCollector(runtime, http_auth_failures))
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)
