"""The stand-in's own test CA and server certificate.

The AWS SDK's CRT transport only speaks HTTP/2 over TLS, so the stand-in needs a certificate the
client trusts. We mint a private CA (trustme) and a leaf for ``127.0.0.1``/``localhost``, and the
client trusts the CA through ``SSL_CERT_FILE`` with no code change (docs/bedrock.md).

Files in ``cert_dir`` are reused when present and valid, so a user who exported
``SSL_CERT_FILE`` once keeps working across restarts of the stand-in.
"""

from __future__ import annotations

import os
import ssl
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from ipaddress import ip_address
from pathlib import Path
from typing import Final

import trustme
from cryptography import x509

CA_FILE: Final = "standin-ca.pem"
SERVER_FILE: Final = "standin-server.pem"  # private key + certificate chain
HOSTS: Final = ("127.0.0.1", "localhost")


@dataclass(frozen=True, slots=True)
class CertPaths:
    ca_file: Path
    server_file: Path


def ensure_certs(cert_dir: str | os.PathLike[str]) -> CertPaths:
    """Create (or reuse) the CA and server certificate in ``cert_dir``; absolute paths."""
    directory = Path(cert_dir).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    paths = CertPaths(directory / CA_FILE, directory / SERVER_FILE)
    if _usable(paths):
        return paths
    ca = trustme.CA(organization_name="voicegate stand-in test CA")
    leaf = ca.issue_cert(*HOSTS, common_name="voicegate-standin")
    _write_atomic(paths.server_file, leaf.private_key_and_cert_chain_pem.bytes(), 0o600)
    _write_atomic(paths.ca_file, ca.cert_pem.bytes(), 0o644)
    return paths


def server_context(paths: CertPaths) -> ssl.SSLContext:
    """TLS 1.2+ with ALPN offering only ``h2``: the stand-in is HTTP/2 only, like the SDK needs."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_COMPRESSION
    ctx.load_cert_chain(str(paths.server_file))
    ctx.set_alpn_protocols(["h2"])
    return ctx


def _usable(paths: CertPaths) -> bool:
    try:
        ca = x509.load_pem_x509_certificate(paths.ca_file.read_bytes())
        chain = x509.load_pem_x509_certificates(paths.server_file.read_bytes())
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(str(paths.server_file))
    except (OSError, ValueError, ssl.SSLError):
        return False
    leaf = chain[0]
    soon = datetime.now(UTC) + timedelta(days=1)
    if leaf.not_valid_after_utc < soon or ca.not_valid_after_utc < soon:
        return False
    if leaf.issuer != ca.subject:
        return False
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    return ip_address("127.0.0.1") in san.get_values_for_type(x509.IPAddress)


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
