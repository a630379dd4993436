"""The test Redis itself: what the cluster tests rely on (a write acknowledged under
`appendfsync always` survives kill -9, a restart keeps port and data)."""

from __future__ import annotations

import os


def test_an_acknowledged_write_survives_kill_9_and_restart(redis_server):
    client = redis_server.client()
    assert client.set("k", "v1") is True
    assert client.config_get("appendfsync") == {"appendfsync": "always"}
    old_pid = redis_server.pid
    redis_server.kill()
    assert not redis_server.running
    redis_server.restart()
    assert redis_server.pid != old_pid
    assert redis_server.client().get("k") == b"v1"
    client.close()


def test_stop_and_restart_keep_port_dir_and_url(redis_server):
    port, url = redis_server.port, redis_server.url
    assert url == f"redis://127.0.0.1:{port}/0"
    redis_server.client().rpush("l", "a", "b")
    redis_server.stop()
    redis_server.restart()
    assert (redis_server.port, redis_server.url) == (port, url)
    assert redis_server.client().lrange("l", 0, -1) == [b"a", b"b"]
    assert os.path.isdir(redis_server.dir / "appendonlydir")
