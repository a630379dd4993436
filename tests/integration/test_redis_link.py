"""broker/cluster/redis_link.py against Debian's redis-server (tests/support/redis.py): the
calls the cluster makes, what happens when Redis goes away, and that no call stops the hub."""

from __future__ import annotations

import time

import gevent
import pytest
import redis

from broker.cluster.redis_link import GroupWriter, RedisLink, RedisUnavailable


@pytest.fixture
def link(redis_server):
    link = RedisLink(redis_server.url, timeout=2.0)
    yield link
    link.close()


def test_call_returns_replies_and_raises_response_errors(link, redis_server):
    assert link.call("SET", "k", "v") == b"OK"
    assert link.call("GET", "k") == b"v"
    assert link.call("INCR", "n") == 1
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        link.call("LPUSH", "k", "x")
    assert link.call("PING") is True or link.call("PING") == b"PONG"
    assert redis_server.client().get("k") == b"v"


def test_call_names_the_connection(redis_server):
    link = RedisLink(redis_server.url, name="gf-n1")
    link.call("PING")
    names = [c["name"] for c in redis_server.client().client_list()]
    link.close()
    assert "gf-n1" in names


def test_pipeline_hands_back_an_error_in_the_middle_and_runs_the_rest(link, redis_server):
    redis_server.client().set("s", "text")
    results = link.pipeline([("SET", "a", 1), ("INCR", "s"), ("INCR", "a")])
    assert results[0] == b"OK" and results[2] == 2
    assert isinstance(results[1], redis.ResponseError) and "not an integer" in str(results[1])
    assert redis_server.client().get("a") == b"2"


def test_a_connection_redis_closed_while_idle_is_replaced_not_reported(link, redis_server):
    assert link.call("SET", "k", "1") == b"OK"
    redis_server.client().client_kill_filter(_type="normal", skipme=True)
    assert link.call("GET", "k") == b"1"
    redis_server.stop()
    redis_server.restart()
    assert link.call("GET", "k") == b"1"


def test_unreachable_redis_is_redis_unavailable(redis_server):
    link = RedisLink(redis_server.url, timeout=1.0)
    link.call("PING")
    redis_server.kill()
    with pytest.raises(RedisUnavailable):
        link.call("GET", "k")
    redis_server.restart()
    assert link.call("SET", "k", "back") == b"OK"  # a fresh connection, by itself
    link.close()


def test_password_from_the_caller_is_sent(tmp_path):
    from support.redis import RedisServer

    server = RedisServer(tmp_path / "r", args=("--requirepass", "s3cret")).start()
    try:
        for password in (None, "wrong"):
            with pytest.raises(RedisUnavailable):
                RedisLink(server.url, password=password).call("PING")
        link = RedisLink(server.url, password="s3cret")
        assert link.call("SET", "x", "1") == b"OK"
        link.close()
    finally:
        server.close()


def test_unix_socket_url(redis_server):
    link = RedisLink(f"unix://{redis_server.socket_path}?db=0")
    assert link.call("SET", "via", "unix") == b"OK"
    link.close()
    assert redis_server.client().get("via") == b"unix"


def test_script_reloads_after_script_flush(link, redis_server):
    script = link.script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
    assert script(["c"], [2]) == 2
    redis_server.client().script_flush()
    assert script(["c"], [3]) == 5
    redis_server.client().script_flush()
    results = link.pipeline([("SET", "before", 1), script.command(["c"], [10]),
                             ("GET", "c")])
    assert results[0] == b"OK" and results[1] == 15
    assert redis_server.client().get("c") == b"15"


def test_a_script_that_does_not_compile_says_why(link):
    broken = link.script("return redis.call(")
    with pytest.raises(redis.ResponseError) as caught:
        broken([], [])
    assert "NOSCRIPT" not in str(caught.value)


def test_scripts_are_loaded_again_after_a_redis_restart(link, redis_server):
    # Redis keeps no script across a restart: the new connection loads them up front.
    script = link.script("return redis.call('SET', KEYS[1], ARGV[1])")
    assert script(["k"], ["1"]) == b"OK"
    redis_server.kill()
    redis_server.restart()
    before = _calls(redis_server, "evalsha")
    assert link.pipeline([script.command(["k"], ["2"]), ("GET", "k")]) == [b"OK", b"2"]
    assert _calls(redis_server, "evalsha") == before + 1  # no NOSCRIPT round


def _calls(server, command: str) -> int:
    stats = server.client().info("commandstats")
    return stats.get(f"cmdstat_{command}", {}).get("calls", 0)


def test_group_writer_sends_one_iterations_submissions_as_one_pipeline(link, redis_server):
    writer = GroupWriter(link)
    seen = []
    for i in range(50):
        writer.submit(("RPUSH", "q", i), seen.append)
    writer.submit(("INCR", "q"), seen.append)  # a WRONGTYPE among them
    writer.submit(("LLEN", "q"), seen.append)
    while len(seen) < 52:
        gevent.sleep(0.005)
    assert seen[:50] == list(range(1, 51))
    assert isinstance(seen[50], redis.ResponseError) and seen[51] == 50
    assert writer.batches == 1
    writer.close()


def test_group_writer_batches_what_comes_while_a_pipeline_is_in_flight(link):
    writer = GroupWriter(link)
    done = []

    def producer(n):
        for i in range(20):
            writer.submit(("RPUSH", f"p{n}", i), done.append)
            gevent.sleep(0)

    gevent.joinall([gevent.spawn(producer, n) for n in range(10)])
    while len(done) < 200:
        gevent.sleep(0.005)
    writer.close()
    print(f"200 writes in {writer.batches} pipelines")
    assert writer.batches < 100


def test_group_writer_keeps_every_write_across_a_redis_kill_and_restart(link, redis_server):
    states = []
    writer = GroupWriter(link, on_state=states.append)
    acked = []
    writer.submit(("RPUSH", "log", 0), acked.append)
    while not acked:
        gevent.sleep(0.005)
    redis_server.kill()
    for i in range(1, 101):
        writer.submit(("RPUSH", "log", i), acked.append)
        gevent.sleep(0.001)
    while writer.up:
        gevent.sleep(0.01)
    assert states == [False]
    assert len(acked) == 1  # nothing acknowledged while down
    redis_server.restart()
    deadline = time.monotonic() + 15
    while len(acked) < 101 and time.monotonic() < deadline:
        gevent.sleep(0.01)
    assert acked == list(range(1, 102)) and states == [False, True] and writer.up
    assert redis_server.client().lrange("log", 0, -1) == [str(i).encode() for i in range(101)]
    writer.close()


def test_group_writer_resends_noscript_commands_in_order(link, redis_server):
    script = link.script("return redis.call('RPUSH', KEYS[1], ARGV[1])")
    assert script(["l"], ["a"]) == 1
    redis_server.client().script_flush()
    writer = GroupWriter(link)
    got = []
    for value in "bcd":
        writer.submit(script.command(["l"], [value]), got.append)
    while len(got) < 3:
        gevent.sleep(0.005)
    writer.close()
    assert got == [2, 3, 4]
    assert redis_server.client().lrange("l", 0, -1) == [b"a", b"b", b"c", b"d"]


def test_subscriber_barrier_follows_every_earlier_publish(link, redis_server):
    seen = []
    sub = link.subscriber(lambda channel, data: seen.append((channel, data)), lambda: None)
    sub.subscribe(b"ch")
    assert sub.barrier(2.0)  # the subscription is in force
    other = RedisLink(redis_server.url)
    for i in range(100):
        other.call("PUBLISH", "ch", f"m{i}")
    assert sub.barrier(2.0)
    assert seen == [(b"ch", f"m{i}".encode()) for i in range(100)]
    sub.unsubscribe(b"ch")
    assert sub.barrier(2.0)
    other.call("PUBLISH", "ch", "after")
    assert sub.barrier(2.0)
    assert len(seen) == 100
    sub.close()
    other.close()


def test_subscriber_reconnects_resubscribes_and_calls_on_reconnect(link, redis_server):
    seen, reconnected = [], []
    sub = link.subscriber(lambda channel, data: seen.append(data),
                          lambda: reconnected.append(time.monotonic()))
    sub.subscribe(b"a", b"b")
    assert sub.barrier(2.0)
    redis_server.kill()
    assert not sub.barrier(0.5)
    redis_server.restart()
    deadline = time.monotonic() + 15
    while not reconnected and time.monotonic() < deadline:
        gevent.sleep(0.02)
    assert len(reconnected) == 1
    assert link.call("PUBLISH", "b", "again") == 1  # subscribed again before on_reconnect
    assert sub.barrier(2.0) and seen == [b"again"]
    sub.close()


def test_no_redis_call_stops_the_hub(link):
    """A 10 ms ticker keeps time while the link blocks in BLPOP and runs 2,000 GETs."""
    lateness = []

    def ticker():
        while True:
            start = time.monotonic()
            gevent.sleep(0.01)
            lateness.append(time.monotonic() - start - 0.01)

    tick = gevent.spawn(ticker)
    gevent.sleep(0.05)
    started = time.monotonic()
    assert link.call("BLPOP", "nothing", 2) is None
    blpop = time.monotonic() - started
    started = time.monotonic()
    for _ in range(2000):
        link.call("GET", "k")
    gets = time.monotonic() - started
    tick.kill()
    worst = max(lateness) * 1000
    print(f"\nBLPOP 2 s took {blpop:.3f} s, 2,000 GETs {gets:.3f} s; ticks {len(lateness)}, "
          f"longest hub stall {worst:.1f} ms")
    assert blpop >= 1.9 and len(lateness) > 150
    assert worst < 50


def test_rediss_checks_the_servers_certificate(tmp_path, monkeypatch):
    from support.broker import free_port
    from support.redis import RedisServer
    from support.tls import make_certificates

    certs = make_certificates(tmp_path / "certs")
    tls_port = free_port()
    server = RedisServer(tmp_path / "r", args=(
        "--tls-port", str(tls_port), "--tls-cert-file", str(certs.server_cert),
        "--tls-key-file", str(certs.server_key), "--tls-ca-cert-file", str(certs.ca),
        "--tls-auth-clients", "no", "--bind", "127.0.0.1", "127.0.0.2")).start()
    try:
        url = f"rediss://localhost:{tls_port}/0"
        with pytest.raises(RedisUnavailable, match="certificate verify failed"):
            RedisLink(url).call("PING")  # the test CA is not a system CA
        monkeypatch.setenv("SSL_CERT_FILE", str(certs.ca))
        link = RedisLink(url)
        assert link.call("SET", "over", "tls") == b"OK"
        link.close()
        with pytest.raises(RedisUnavailable, match="mismatch"):  # not a name it has
            RedisLink(f"rediss://127.0.0.2:{tls_port}/0", timeout=2).call("PING")
        assert server.client().get("over") == b"tls"
    finally:
        server.close()
