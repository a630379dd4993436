"""`/healthz` and `/readyz`: is the process alive, and should traffic be sent to it.

Alive is answering at all (the hub runs). Ready is every MQTT listener accepting, the journal
accepting writes (`store.failure` unset: a full disk makes the broker refuse QoS 1/2
publishes, so a load balancer should send clients elsewhere), and no shutdown under way.
"""

from __future__ import annotations

from typing import Any

from .runtime_view import Runtime


def readiness(runtime: Runtime) -> tuple[bool, dict[str, Any]]:
    """(ready, the JSON body): the body lists every reason it is not ready."""
    reasons = []
    if runtime.stopping:
        reasons.append("the broker is shutting down")
    for listener in runtime.listeners:
        if not listener.listening:
            reasons.append(f"listener {listener.url} is not accepting connections")
    failure = getattr(runtime.store, "failure", None)
    if failure is not None:
        reasons.append(f"the journal cannot be written: {failure} (QoS 1/2 publishes are "
                       "refused until it can)")
    if reasons:
        return False, {"status": "not ready", "reasons": reasons}
    return True, {"status": "ready", "listeners": [item.url for item in runtime.listeners]}
