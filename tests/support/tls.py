"""Certificates for TLS tests, made with the openssl command line: a CA, a server
certificate for 127.0.0.1/localhost, and client certificates signed by the CA."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@dataclass(frozen=True)
class Certificates:
    directory: Path
    ca: Path
    server_cert: Path
    server_key: Path

    def client(self, common_name: str) -> tuple[Path, Path]:
        """A client certificate and key for `common_name`, signed by the CA."""
        key = self.directory / f"{common_name}.key"
        cert = self.directory / f"{common_name}.crt"
        if not cert.exists():
            _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", key.name, "-out",
                     f"{common_name}.csr", "-subj", f"/CN={common_name}", cwd=self.directory)
            _openssl("x509", "-req", "-in", f"{common_name}.csr", "-CA", "ca.crt", "-CAkey",
                     "ca.key", "-CAcreateserial", "-out", cert.name, "-days", "2",
                     cwd=self.directory)
        return cert, key


def make_certificates(directory: Path) -> Certificates:
    directory.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
             "ca.crt", "-days", "2", "-subj", "/CN=greenfly test CA", cwd=directory)
    (directory / "server.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out",
             "server.csr", "-subj", "/CN=localhost", cwd=directory)
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "server.ext",
             cwd=directory)
    return Certificates(directory, directory / "ca.crt", directory / "server.crt",
                        directory / "server.key")
