"""`greenfly passwd`: manage a password file the way `mosquitto_passwd` does.

    greenfly passwd [-c | -D] [-I ITERATIONS] FILE USER    prompt twice for the password
    greenfly passwd -b [-c] [-I ITERATIONS] FILE USER PASSWORD
    greenfly passwd -U FILE                                hash a plain-text user:password file

`-c` creates (or empties) the file first; otherwise it must exist. A file that exists but is
not a password file (a line that is neither `user:hash`, `user:plain-text` for -U, blank nor a
`#` comment: `greenfly passwd -c greenfly.toml ...` names the config, as `-c` does everywhere
else) is never written without `--force`; mosquitto_passwd replaces it. Without `-b` the
password is prompted for twice on a terminal, or read from stdin when that is not a terminal:
one line, or two that must match (what mosquitto_passwd reads). Hashes are `$7$`
(PBKDF2-SHA512) with `DEFAULT_ITERATIONS`, which Mosquitto reads as well. Lines that are not
touched are kept as they are; the file is replaced atomically and made readable by its owner
only when it is new, since it holds hashes that can be attacked offline; an existing file
keeps its owner, group and mode, so a service user that could read it still can.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
import tempfile
from typing import Any

from ..auth.passwords import DEFAULT_ITERATIONS, hash_password, parse_hash


class PasswdError(Exception):
    pass


def register(commands: Any, config_option: argparse.ArgumentParser) -> None:
    parser = commands.add_parser(
        "passwd", help="create or change users in a password file (like mosquitto_passwd)",
        description="Manage a Mosquitto-compatible password file.")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("-c", dest="create", action="store_true",
                      help="create a new password file (an existing one is emptied)")
    mode.add_argument("-D", dest="delete", action="store_true", help="delete the user")
    mode.add_argument("-U", dest="upgrade", action="store_true",
                      help="hash every plain-text password in the file")
    parser.add_argument("-b", dest="batch", action="store_true",
                        help="take the password from the command line")
    parser.add_argument("--force", action="store_true",
                        help="write FILE even if it does not look like a password file")
    parser.add_argument("-I", dest="iterations", type=int, default=DEFAULT_ITERATIONS,
                        help=f"PBKDF2 iterations (default {DEFAULT_ITERATIONS})")
    parser.add_argument("file")
    parser.add_argument("username", nargs="?")
    parser.add_argument("password", nargs="?")
    parser.set_defaults(handler=lambda args, path: passwd_command(args))


def passwd_command(args: argparse.Namespace) -> int:
    try:
        _run(args)
    except PasswdError as exc:
        print(f"greenfly passwd: {exc}", file=sys.stderr)
        return 1
    return 0


def _run(args: argparse.Namespace) -> None:
    if args.iterations < 1:
        raise PasswdError("-I needs a positive iteration count")
    if not args.force:
        _refuse_other_files(args.file)
    if args.upgrade:
        if args.username or args.batch:
            raise PasswdError("-U takes only the password file")
        _write(args.file, _upgraded(_read(args.file)))
        return
    if not args.username:
        raise PasswdError("a user name is needed")
    if ":" in args.username:
        raise PasswdError("a user name cannot contain ':'")
    lines = [] if args.create else _read(args.file)
    if args.delete:
        kept = [line for line in lines if _user_of(line) != args.username]
        if len(kept) == len(lines):
            raise PasswdError(f"user {args.username} not found in {args.file}")
        _write(args.file, kept)
        return
    if args.batch:
        if args.password is None:
            raise PasswdError("-b needs a password on the command line")
        password = args.password
    else:
        if args.password is not None:
            raise PasswdError("a password on the command line needs -b")
        password = _prompt() if sys.stdin.isatty() else _from_stdin()
    entry = f"{args.username}:{hash_password(password, args.iterations).encode()}"
    replaced = [entry if _user_of(line) == args.username else line for line in lines]
    if entry not in replaced:
        replaced.append(entry)
    _write(args.file, replaced)


def _prompt() -> str:
    first = getpass.getpass("Password: ")
    second = getpass.getpass("Reenter password: ")
    if first != second:
        raise PasswdError("passwords do not match")
    if not first:
        raise PasswdError("an empty password is not allowed")
    return first


def _from_stdin() -> str:
    """The password piped in: one line, or two that match (as mosquitto_passwd reads it).
    getpass would prompt on /dev/tty instead, or fail at the second read."""
    lines = sys.stdin.read().splitlines()
    if not lines or not lines[0]:
        raise PasswdError("no password on stdin")
    if len(lines) > 1 and lines[1] != lines[0]:
        raise PasswdError("passwords do not match (stdin gave two different lines)")
    return lines[0]


def _refuse_other_files(path: str) -> None:
    """PasswdError when `path` exists and holds a line no password file has."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return  # missing (-c creates it) or unreadable (_read says so)
    for number, line in enumerate(lines, 1):
        if _user_of(line) is None and line.strip() and not line.strip().startswith("#"):
            raise PasswdError(
                f"{path} is not a password file (line {number}: {line.strip()[:40]!r}); "
                "refusing to overwrite it. passwd's -c means create, and FILE is the "
                "password file, not the config; give --force to write it anyway")


def _user_of(line: str) -> str | None:
    """The user name of a `user:hash` line; None for anything else. A TOML line (`[table]`,
    `key = "a:b"`, a quoted array item) is not one."""
    stripped = line.strip()
    if not stripped or stripped.startswith(("#", "[", '"', "'", "{")) or ":" not in stripped:
        return None
    user = stripped.split(":", 1)[0]
    return None if "=" in user else user


def _upgraded(lines: list[str]) -> list[str]:
    out = []
    for line in lines:
        user = _user_of(line)
        if user is None:
            out.append(line)
            continue
        secret = line.strip().split(":", 1)[1]
        try:
            parse_hash(secret)
            out.append(line)  # already hashed
        except ValueError:
            out.append(f"{user}:{hash_password(secret).encode()}")
    return out


def _read(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read().splitlines()
    except FileNotFoundError:
        raise PasswdError(f"{path} does not exist (use -c to create it)") from None
    except OSError as exc:
        raise PasswdError(f"cannot read {path}: {exc.strerror}") from None


def _write(path: str, lines: list[str]) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=".passwd-", dir=directory)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write("".join(f"{line}\n" for line in lines))
            fh.flush()
            os.fsync(fh.fileno())
        try:
            before = os.stat(path)
        except FileNotFoundError:
            os.chmod(tmp, 0o600)
        else:
            os.chmod(tmp, before.st_mode & 0o7777)
            if os.geteuid() == 0:
                os.chown(tmp, before.st_uid, before.st_gid)
        os.replace(tmp, path)
    except OSError as exc:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        raise PasswdError(f"cannot write {path}: {exc.strerror}") from None
