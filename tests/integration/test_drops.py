"""Messages a client cannot take: every one dropped is counted and said in the log, in full,
without waiting for more traffic; a subscriber that stops reading costs a bounded amount of
memory, given back when it leaves."""

from __future__ import annotations

import re
import time

from support.clients import PahoClient, RawClient, publish_many, unique

DROP_LINE = r"client {}: dropped (\d+) message\(s\) since the last report"


def drop_counts(log: str, client_id: str) -> list[int]:
    return [int(n) for n in re.findall(DROP_LINE.format(re.escape(client_id)), log)]


def test_a_burst_of_drops_is_logged_in_full_by_the_timer_without_further_traffic(
        broker_factory):
    proc = broker_factory("[limits]\nmax_queued_messages = 5\n\n[log]\ndrop_log_interval = 0.5\n")
    client_id = unique("away")
    topic = f"{client_id}/t"
    device = PahoClient(proc.port, client_id, clean_session=False)
    device.connect()
    device.subscribe(topic, 1)
    device.disconnect()
    pub = RawClient(proc.port)
    pub.connect()
    publish_many(pub, topic, [b"%d" % i for i in range(205)])  # 5 queued, 200 dropped
    # The first drop is said at once, the others by the timer, though nothing else happens
    deadline = time.monotonic() + 10
    while sum(counts := drop_counts(proc.log_text(), client_id)) < 200:
        assert time.monotonic() < deadline, f"the log says {counts} of 200 drops"
        time.sleep(0.05)
    assert counts[0] == 1 and sum(counts) == 200, counts
    pub.close()
