"""`deploy/install.sh --prefix DIR`: a scratch-root install produces the virtualenv, the
configuration, the password file and the systemd unit; a second run changes nothing (same
files, same bytes, same modification times); and the installed broker runs and takes the
first user's password.

install.sh runs from a copy of the checkout, so edits made to the working tree while the test
runs cannot make the second run reinstall. Creating the virtualenv (pip's own install) is what
makes this test slow.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import subprocess
from pathlib import Path

import pytest
from support.broker import REPO, wait_for_listening
from support.deploy import any_ports, greenfly, need_program

from broker.auth.passwords import load_password_file


def listing(root: Path) -> list[tuple]:
    """Every path under root with its kind, mode, size, mtime and (files) content hash."""
    out = []
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        digest = (hashlib.sha256(path.read_bytes()).hexdigest()
                  if path.is_file() and not path.is_symlink() else None)
        out.append((str(path.relative_to(root)), st.st_mode, st.st_size, st.st_mtime_ns, digest))
    return out


def install(checkout: Path, root: Path) -> subprocess.CompletedProcess:
    result = subprocess.run(["sh", str(checkout / "deploy/install.sh"), "--prefix", str(root),
                             "--user", "admin", "--password", "s3cret"],
                            capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


@pytest.mark.slow
def test_install_into_a_prefix_twice_changes_nothing_and_the_broker_runs(tmp_path):
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    for name in ("deploy", "broker", "pyproject.toml", "README.md"):
        copy = shutil.copytree if (REPO / name).is_dir() else shutil.copy2
        copy(REPO / name, checkout / name)
    root = tmp_path / "root"
    had_user = user_exists("greenfly")
    had_unit = Path("/etc/systemd/system/greenfly.service").exists()

    first = install(checkout, root)
    assert "installed into" in first.stdout
    venv_greenfly = root / "opt/greenfly/bin/greenfly"
    config = root / "etc/greenfly/greenfly.toml"
    unit = root / "etc/systemd/system/greenfly.service"
    assert venv_greenfly.is_file() and (root / "opt/greenfly/bin/python").exists()
    text = config.read_text()
    assert f'data_dir = "{root}/var/lib/greenfly"' in text
    assert f'password_file = "{root}/etc/greenfly/passwd"' in text
    assert "allow_anonymous = false" in text and 'bind = "127.0.0.1"' in text
    assert load_password_file(str(root / "etc/greenfly/passwd"))["admin"].verify("s3cret")
    assert oct((root / "etc/greenfly/passwd").stat().st_mode & 0o777) == "0o640"
    assert f"ExecStart={venv_greenfly} -c {config}" in unit.read_text()
    verified = subprocess.run([need_program("systemd-analyze"), "verify", str(unit)],
                              capture_output=True, text=True, timeout=60)
    assert verified.returncode == 0 and "greenfly.service" not in verified.stderr, \
        verified.stderr
    # No user, no unit outside the prefix.
    assert user_exists("greenfly") == had_user
    assert Path("/etc/systemd/system/greenfly.service").exists() == had_unit

    # The admin's edit is theirs: the second run keeps it.
    config.write_text(text + "# edited by the admin\n")
    before = listing(root)
    second = install(checkout, root)
    assert listing(root) == before, second.stdout
    assert "writing" not in second.stdout and "installing" not in second.stdout

    any_ports(config)  # for this test: the broker's log names the ports it picked
    log = tmp_path / "broker.log"
    with open(log, "wb") as out:
        broker = subprocess.Popen([str(venv_greenfly), "-c", str(config)], cwd=root,
                                  stdout=out, stderr=subprocess.STDOUT,
                                  env={**os.environ, "NOTIFY_SOCKET": ""})
    try:
        [(_, port), _proxied, _ws] = wait_for_listening(log, 3, proc=broker)
        ok = greenfly("probe", f"mqtt://127.0.0.1:{port}", "-u", "admin", "-P", "s3cret")
        assert ok.stdout.endswith("ok\n")
        refused = greenfly("probe", f"mqtt://127.0.0.1:{port}", check=False)
        assert "CONNACK refused: not authorized" in refused.stdout, refused.stdout
    finally:
        broker.terminate()
        broker.wait(10)
