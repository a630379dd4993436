"""The `[cluster]` section: absent means a single node; each key's good and bad values, with
errors that name the file, the line and the key."""

from __future__ import annotations

import pytest

from broker.config.description import describe
from broker.config.loading import load_default, load_text, redis_password
from broker.config.schema import ClusterSection
from broker.errors import ConfigError


def test_no_cluster_section_means_a_single_node():
    assert load_default().cluster is None
    assert load_text("[broker]\n", "x.toml").cluster is None


def test_defaults_with_only_node_id():
    assert load_text('[cluster]\nnode_id = "n1"\n', "x.toml").cluster == ClusterSection(
        node_id="n1", redis_url="redis://127.0.0.1:6379/0", redis_password_file=None,
        key_prefix="gf:", lease_ms=10_000)


def test_every_key_set(tmp_path):
    secret = tmp_path / "redis.secret"
    secret.write_text("  s3cret\n")
    cluster = load_text(
        f'[cluster]\nnode_id = "eu-1.a_b"\nredis_url = "rediss://user@redis.example:6380/2"\n'
        f'redis_password_file = "{secret}"\nkey_prefix = "prod:"\nlease_ms = 600000\n',
        "x.toml").cluster
    assert cluster == ClusterSection("eu-1.a_b", "rediss://user@redis.example:6380/2",
                                     str(secret), "prod:", 600_000)
    assert redis_password(cluster) == "s3cret"


@pytest.mark.parametrize("url", ["redis://127.0.0.1:6379/0", "redis://localhost", "rediss://h:1/15",
                                 "unix:///run/redis/redis-server.sock",
                                 "unix:///run/redis.sock?db=3", "redis://[::1]:6379/0"])
def test_good_redis_urls(url):
    assert load_text(f'[cluster]\nnode_id = "n"\nredis_url = "{url}"\n', "x").cluster.redis_url \
        == url


@pytest.mark.parametrize(("line", "key", "says"), [
    ('node_id = "a b"', "node_id", "letters, digits"),
    ('node_id = "n/1"', "node_id", "letters, digits"),
    (f'node_id = "{"n" * 65}"', "node_id", "1 to 64"),
    ('node_id = ""', "node_id", "1 to 64"),
    ("node_id = 7", "node_id", "1 to 64"),
    ('redis_url = "http://127.0.0.1:6379"', "redis_url", "redis://, rediss://"),
    ('redis_url = "127.0.0.1:6379"', "redis_url", "redis://, rediss://"),
    ('redis_url = "redis://:hunter2@127.0.0.1/0"', "redis_url", "redis_password_file"),
    ('redis_url = "redis://127.0.0.1:70000/0"', "redis_url", "port"),
    ('redis_url = "redis://127.0.0.1:0/0"', "redis_url", "host (and port)"),
    ('redis_url = "redis:///0"', "redis_url", "host (and port)"),
    ('redis_url = "redis://h/db1"', "redis_url", "database number"),
    ('redis_url = "unix://"', "redis_url", "unix:///path"),
    ('key_prefix = ""', "key_prefix", "non-empty string"),
    ("lease_ms = 999", "lease_ms", "1000..600000"),
    ("lease_ms = 600001", "lease_ms", "1000..600000"),
    ("lease_ms = 1.5e4", "lease_ms", "1000..600000"),
    ('redis_password_file = "/nonexistent/redis.secret"', "redis_password_file",
     "cannot read the Redis password file"),
])
def test_bad_values_name_file_line_and_key(line, key, says):
    text = f'[broker]\n\n[cluster]\nnode_id = "n1"\n{line}\n'
    if key == "node_id":
        text = f"[broker]\n\n[cluster]\n{line}\n"
    with pytest.raises(ConfigError) as caught:
        load_text(text, "node.toml")
    error = caught.value
    assert (error.file, error.key) == ("node.toml", f"cluster.{key}")
    assert error.line == text.splitlines().index(line) + 1
    assert says in error.reason, error.reason


def test_node_id_is_required_in_the_section():
    with pytest.raises(ConfigError) as caught:
        load_text('[cluster]\nlease_ms = 5000\n', "node.toml")
    assert caught.value.key == "cluster.node_id" and "needs node_id" in str(caught.value)


def test_unknown_key_is_refused():
    with pytest.raises(ConfigError) as caught:
        load_text('[cluster]\nnode_id = "n1"\nnodes = 3\n', "node.toml")
    assert caught.value.key == "cluster.nodes" and caught.value.line == 3


def test_an_empty_password_file_is_an_error(tmp_path):
    secret = tmp_path / "redis.secret"
    secret.write_text(" \n")
    with pytest.raises(ConfigError) as caught:
        load_text(f'[cluster]\nnode_id = "n1"\nredis_password_file = "{secret}"\n', "node.toml")
    assert caught.value.key == "cluster.redis_password_file" and caught.value.line == 3
    assert "is empty" in str(caught.value)


def test_a_password_file_that_went_away_after_loading_names_the_key(tmp_path):
    secret = tmp_path / "redis.secret"
    secret.write_text("pw")
    cluster = load_text(f'[cluster]\nnode_id = "n1"\nredis_password_file = "{secret}"\n',
                        "node.toml").cluster
    secret.unlink()
    with pytest.raises(ConfigError) as caught:
        redis_password(cluster)
    assert caught.value.key == "cluster.redis_password_file"


def test_check_describes_the_cluster(tmp_path):
    secret = tmp_path / "redis.secret"
    secret.write_text("pw")
    lines = describe(load_text(f'[cluster]\nnode_id = "n1"\nredis_password_file = "{secret}"\n',
                               "x"))
    assert (f"cluster node 'n1' on redis://127.0.0.1:6379/0 (keys under 'gf:', lease 10000 ms, "
            f"password from {secret})") in lines
    assert not any("cluster" in line for line in describe(load_default()))
