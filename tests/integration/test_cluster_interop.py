"""The Eclipse Paho interoperability suites through nginx in front of three cluster nodes.

bench/interop.py does the work (the suites are someone else's code, extracted from a local
snapshot of eclipse/paho.mqtt.testing and never copied here): a redis-server, three greenfly
nodes with `[cluster]`, nginx rendered by `greenfly deploy nginx-stream --upstream`, the suite
pointed at nginx. The 3.1.1 suite runs whole (about 40 s); the v5 suite whole takes over two
minutes, so this runs the tests in `V5_SUBSET` and bench/README.md has the full run's figures.
What each left-out test is left out for is in `V5_LEFT_OUT`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SNAPSHOT = Path("/work/.mirror/eclipse+paho.mqtt.testing/repo")

V5_LEFT_OUT = {
    # Slow and about one connection's timers: nothing in them crosses nodes.
    "test_keepalive": "15 s of one connection's keep alive",
    "test_will_delay": "15 s of timers; runs in bench/interop.py",
    # The suite subscribes on one client and, without waiting for that SUBACK (it waits on
    # the other client's list), publishes on another: on two nodes the publish can arrive
    # before the subscription's route has crossed Redis. Not a broken promise (nothing was
    # acknowledged), but it fails: see bench/README.md.
    "test_subscribe_options": "publishes before the other client's SUBACK",
    "test_request_response": "publishes before the other client's SUBACK",
    # Shared subscriptions are served by every node that has a member (a known gap).
    "test_shared_subscriptions": "shared subscriptions across nodes deliver once per node",
    # nginx closes the client's side with unread bytes in it: a reset, not the DISCONNECT.
    "test_flow_control2": "nginx resets instead of passing the DISCONNECT 0x93 on",
}
V5_SUBSET = [
    "test_basic", "test_retained_message", "test_will_message", "test_zero_length_clientid",
    "test_offline_message_queueing", "test_overlapping_subscriptions",
    "test_redelivery_on_reconnect", "test_subscribe_failure", "test_dollar_topics",
    "test_unsubscribe", "test_session_expiry", "test_user_properties", "test_payload_format",
    "test_publication_expiry", "test_assigned_clientid", "test_subscribe_identifiers",
    "test_client_topic_alias", "test_server_topic_alias", "test_maximum_packet_size",
    "test_server_keep_alive", "test_flow_control1",
]


def run_suite(tmp_path: Path, suite: str, tests: list[str]) -> tuple[dict, str]:
    """bench/interop.py against a fresh cluster: (its outcome for `suite`, what it printed)."""
    if not (SNAPSHOT / "HEAD").exists():
        pytest.fail(f"{SNAPSHOT}: a bare clone of eclipse/paho.mqtt.testing is needed")
    out = tmp_path / f"v{suite}.json"
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "interop.py"), "--brokers", "greenfly-cluster",
         "--suites", suite, "--json", str(out), *(["--tests", ",".join(tests)] if tests else [])],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    printed = done.stdout + done.stderr
    assert out.exists(), printed
    [row] = json.loads(out.read_text())
    assert done.returncode == 0, printed
    return row, printed


@pytest.mark.parametrize(("suite", "tests", "total"), [
    ("3.1.1", [], 10),
    ("5", V5_SUBSET, len(V5_SUBSET)),
])
def test_suite_passes_through_nginx_with_three_nodes(tmp_path: Path, suite: str,
                                                     tests: list[str], total: int) -> None:
    row, printed = run_suite(tmp_path, suite, tests)
    assert (row["failed"], row["unfinished"]) == ({}, []), printed
    assert len(row["passed"]) == row["total"] == total, printed
    # Where the suite's clients landed, as each node's log names them: at least two nodes,
    # and the suite's two clients (myclientid, myclientid2) among them.
    landed = {node: set(ids) for node, ids in row["landed"].items()}
    assert sum(1 for ids in landed.values() if ids) >= 2, landed
    for client_id in ("myclientid", "myclientid2"):
        assert any(client_id in ids for ids in landed.values()), landed
