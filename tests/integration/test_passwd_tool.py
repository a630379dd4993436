"""`greenfly passwd` foot-guns: a config file named where the password file goes, and a
password piped on stdin (mosquitto_passwd 2.0.11, for comparison, replaces any file with
`-c`, and even without it, exit 0)."""

from __future__ import annotations

import subprocess
import sys

from broker.auth.passwords import load_password_file

GREENFLY = [sys.executable, "-m", "broker"]
CONFIG = '[broker]\ndata_dir = "/var/lib/greenfly"\n\n[[listener]]\nport = 1883\n'


def _passwd(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    # stdin=DEVNULL when nothing is piped: never the test runner's terminal.
    return subprocess.run([*GREENFLY, "passwd", *args], capture_output=True, text=True,
                          input=stdin, stdin=None if stdin is not None else subprocess.DEVNULL,
                          timeout=60)


def test_passwd_refuses_to_overwrite_a_config_file_without_force(tmp_path):
    config = tmp_path / "greenfly.toml"
    config.write_text(CONFIG)
    for args in (["-c", "-b"], ["-b"]):  # "-c greenfly.toml" as everywhere else; or no -c
        refused = _passwd("-I", "1000", *args, str(config), "alice", "secret")
        assert refused.returncode == 1, refused
        assert "greenfly.toml is not a password file (line 1: '[broker]')" in refused.stderr
        assert "--force" in refused.stderr and "Traceback" not in refused.stderr
        assert config.read_text() == CONFIG  # untouched
    forced = _passwd("-I", "1000", "-c", "-b", "--force", str(config), "alice", "secret")
    assert forced.returncode == 0, forced.stderr
    assert load_password_file(str(config))["alice"].verify("secret")


def test_passwd_edits_password_files_with_comments_and_plain_text_lines(tmp_path):
    path = tmp_path / "passwords"
    path.write_text("# users\n\nfrank:plain-text\n")
    assert _passwd("-I", "1000", "-b", str(path), "alice", "secret").returncode == 0
    assert _passwd("-I", "1000", "-c", "-b", str(path), "bob", "builder").returncode == 0
    assert list(load_password_file(str(path))) == ["bob"]  # -c empties a password file


def test_a_password_piped_on_stdin_is_used(tmp_path):
    path = tmp_path / "passwords"
    one = _passwd("-I", "1000", "-c", str(path), "alice", stdin="s3cret with spaces\n")
    assert one.returncode == 0, one.stderr
    assert load_password_file(str(path))["alice"].verify("s3cret with spaces")
    # Twice, as mosquitto_passwd reads it (password, then again), works too ...
    two = _passwd("-I", "1000", str(path), "bob", stdin="builder\nbuilder\n")
    assert two.returncode == 0, two.stderr
    assert load_password_file(str(path))["bob"].verify("builder")
    # ... and two that differ, or nothing at all, are refused without a traceback.
    for stdin, message in (("one\ntwo\n", "passwords do not match"),
                           ("", "no password on stdin")):
        bad = _passwd("-I", "1000", str(path), "carol", stdin=stdin)
        assert bad.returncode == 1 and message in bad.stderr, bad
        assert "Traceback" not in bad.stderr
    assert "carol" not in path.read_text()
