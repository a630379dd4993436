"""The local side of a bridge: a persistent session whose peer is the link to the remote.

What the bridge owes the remote is what any persistent session owes its client: the `out`
lines' local filters are its subscriptions (no local, so what the bridge brought in never
goes back out; retain as published, so retained messages cross as retained), and its
in-flight window and queue are written ahead to the journal like every session's. So QoS
1/2 messages survive an outage and a `kill -9`, go out in order when the link returns, and
leave the journal only when the remote acknowledged them. The session never expires; its
queue is bounded by the bridge's own `max_queued_messages` (a `SessionEnv` of its own).

Its client id, `$bridge/<name>`, is refused to clients (connect_flow), so none can take the
session over.
"""

from __future__ import annotations

import dataclasses
import logging

from ..codec import SubOptions
from ..config.bridge_topics import BridgeTopic
from ..config.schema import BridgeSection, LimitsSection
from .registry import SESSION_NEVER_EXPIRES, SessionRegistry
from .session import Session, SessionEnv

BRIDGE_SESSION_PREFIX = "$bridge/"

log = logging.getLogger("greenfly.bridge")


def session_id(name: str) -> str:
    return BRIDGE_SESSION_PREFIX + name


def bridge_env(env: SessionEnv, config: BridgeSection,
               receive_maximum: int = 0) -> SessionEnv:
    """The broker's session environment with the bridge's queue bound instead of a client's,
    and the window lowered to an MQTT 5 remote's Receive Maximum (its CONNACK's): the session
    lays deliveries out for a 3.1.1 peer, so the window is the one place that limit can live.
    Mosquitto answers a QoS 2 PUBLISH beyond it with PUBREC 0x97, which would lose it."""
    window = env.limits.max_inflight_messages
    if receive_maximum and (not window or receive_maximum < window):
        window = receive_maximum  # [MQTT-3.3.4-9]
    limits: LimitsSection = dataclasses.replace(
        env.limits, max_queued_messages=config.max_queued_messages, max_queued_bytes=0,
        max_inflight_messages=window)
    return SessionEnv(env.store, env.stats, limits, env.drops)


def open_session(registry: SessionRegistry, config: BridgeSection,
                 env: SessionEnv) -> Session:
    """The bridge's session (restored from the journal if it was there), its subscriptions
    made to match the `out` lines now configured."""
    session, _resumed = registry.open(session_id(config.name), False, 4,
                                      SESSION_NEVER_EXPIRES, True)
    session.env = bridge_env(env, config)
    wanted: dict[str, int] = {}
    for line in config.topic:
        if line.outgoing:
            wanted[line.local_filter] = max(line.qos, wanted.get(line.local_filter, 0))
    tree = registry.tree
    for topic_filter, options in list(session.subscriptions.items()):
        if wanted.get(topic_filter) != options.qos:
            tree.unsubscribe(session.client_id, topic_filter)
            session.remove_subscription(topic_filter)
    for topic_filter, qos in wanted.items():
        if topic_filter not in session.subscriptions:
            tree.subscribe(session.client_id, topic_filter, qos, True, True)
            session.add_subscription(topic_filter, SubOptions(qos, True, True, 0))
    return session


def remove_unconfigured(registry: SessionRegistry, names: set[str]) -> None:
    """Discard the sessions of bridges no longer configured (what they still held with
    them, said in the log), so they queue nothing more."""
    for session in registry:
        name = session.client_id[len(BRIDGE_SESSION_PREFIX):]
        if session.client_id.startswith(BRIDGE_SESSION_PREFIX) and name not in names:
            log.warning("bridge %s is no longer configured: its session is discarded, with %d "
                        "message(s) it still owed the remote", name, session.owed())
            registry.remove(session)


def to_remote(lines: tuple[BridgeTopic, ...], topic: str) -> str | None:
    """The remote topic of local `topic` by the first `out`/`both` line that sends it."""
    for line in lines:
        mapped = line.to_remote(topic)
        if mapped is not None:
            return mapped
    return None


def to_local(lines: tuple[BridgeTopic, ...], topic: str) -> str | None:
    """The local topic of remote `topic` by the first `in`/`both` line that takes it."""
    for line in lines:
        mapped = line.to_local(topic)
        if mapped is not None:
            return mapped
    return None
