"""Mosquitto's password file, read and written: `username:hash`, one per line.

Hashes (as `mosquitto_passwd` writes them, salts and digests in standard base64):
- `$7$ITERATIONS$SALT$HASH`: PBKDF2-HMAC-SHA512 over the raw salt, 64-byte digest. Mosquitto
  writes 101 iterations and a 12-byte salt; greenfly writes `DEFAULT_ITERATIONS`, which
  Mosquitto reads too because the count is in the string.
- `$6$SALT$HASH`: SHA-512 of password + salt (Mosquitto 1.x); read, never written.
Verification compares digests in constant time. Parsing errors name the file and line.
This module is pure: the caller decides where the (slow) hashing runs. hashlib (OpenSSL's
libcrypto) is imported by the first hash, not with the module: the broker imports this with
its listeners, password file or not, and a cold start without one need not load it.
"""

from __future__ import annotations

import base64
import binascii
import os
from dataclasses import dataclass

from ..config.loading import read_text
from ..errors import ConfigError

DEFAULT_ITERATIONS = 210_000
SALT_BYTES = 12
DIGEST_BYTES = 64


@dataclass(frozen=True, slots=True)
class PasswordHash:
    scheme: str  # "7" (PBKDF2-SHA512) or "6" (salted SHA-512)
    iterations: int
    salt: bytes
    digest: bytes

    def verify(self, password: str) -> bool:
        """True when `password` hashes to this digest (constant-time comparison)."""
        import hashlib
        import hmac

        secret = password.encode("utf-8")
        if self.scheme == "7":
            candidate = hashlib.pbkdf2_hmac("sha512", secret, self.salt, self.iterations,
                                            len(self.digest))
        else:
            candidate = hashlib.sha512(secret + self.salt).digest()
        return hmac.compare_digest(candidate, self.digest)

    def encode(self) -> str:
        salt = base64.b64encode(self.salt).decode()
        digest = base64.b64encode(self.digest).decode()
        if self.scheme == "7":
            return f"$7${self.iterations}${salt}${digest}"
        return f"$6${salt}${digest}"


def hash_password(password: str, iterations: int = DEFAULT_ITERATIONS,
                  salt: bytes | None = None) -> PasswordHash:
    import hashlib

    salt = os.urandom(SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations,
                                 DIGEST_BYTES)
    return PasswordHash("7", iterations, salt, digest)


def parse_hash(text: str) -> PasswordHash:
    """Parse `$7$...` or `$6$...`; ValueError says what is wrong."""
    parts = text.split("$")
    try:
        if len(parts) == 5 and parts[0] == "" and parts[1] == "7":
            iterations = int(parts[2])
            if iterations < 1:
                raise ValueError("iteration count must be positive")
            return PasswordHash("7", iterations, base64.b64decode(parts[3], validate=True),
                                base64.b64decode(parts[4], validate=True))
        if len(parts) == 4 and parts[0] == "" and parts[1] == "6":
            return PasswordHash("6", 0, base64.b64decode(parts[2], validate=True),
                                base64.b64decode(parts[3], validate=True))
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"bad hash: {exc}") from None
    raise ValueError("not a $7$ (PBKDF2-SHA512) or $6$ (SHA-512) hash; plain-text passwords "
                     "must be hashed first (greenfly passwd -U FILE)")


def parse_password_file(text: str, source: str) -> dict[str, PasswordHash]:
    """`username:hash` lines; blank lines and `#` comments are skipped."""
    users: dict[str, PasswordHash] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        username, sep, encoded = line.partition(":")
        if not sep or not username:
            raise ConfigError("expected username:hash", file=source, line=number)
        try:
            users[username] = parse_hash(encoded)
        except ValueError as exc:
            raise ConfigError(f"user {username!r}: {exc}", file=source, line=number) from None
    return users


def load_password_file(path: str) -> dict[str, PasswordHash]:
    return parse_password_file(read_text(path, "password file"), path)


def format_password_file(users: dict[str, PasswordHash]) -> str:
    return "".join(f"{name}:{entry.encode()}\n" for name, entry in users.items())
