"""Key material for a loopback deployment: a CA, a SuperLink TLS certificate, SuperNode keys.

Everything is generated with the ``cryptography`` package (a dependency of flwr), so no
``openssl`` binary is needed:

* :func:`make_tls_certificates` writes ``ca.crt`` / ``ca.key`` (a self-signed CA) and
  ``server.pem`` / ``server.key`` (the SuperLink's certificate, signed by the CA, with
  ``subjectAltName`` ``IP:127.0.0.1``, ``IP:::1`` and ``DNS:localhost``, extended key usage
  ``serverAuth``).  The SuperLink gets ``--ssl-ca-certfile ca.crt --ssl-certfile server.pem
  --ssl-keyfile server.key``; SuperNodes ``--root-certificates ca.crt``; the Flower config
  ``root-certificates = ".../ca.crt"``.
* :func:`make_supernode_keys` writes an EC P-384 key pair per SuperNode in OpenSSH format
  (``node-<i>`` private, ``node-<i>.pub`` public), the format ``flower-supernode
  --auth-supernode-private-key`` and ``flwr supernode register`` read.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["TlsFiles", "make_tls_certificates", "make_supernode_keys", "private_dir", "write_owner_only"]


class TlsFiles:
    """Paths of the generated TLS files."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.ca_cert = self.directory / "ca.crt"
        self.ca_key = self.directory / "ca.key"
        self.server_cert = self.directory / "server.pem"
        self.server_key = self.directory / "server.key"

    def exist(self) -> bool:
        return all(p.is_file() for p in (self.ca_cert, self.ca_key, self.server_cert, self.server_key))


def _write_private(path: Path, data: bytes) -> None:
    """Write a secret readable by its owner only from the first byte on: created 0600 (no
    window in which another local user could read a key written 0644 and chmod'ed later)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_TRUNC: reset it
        os.write(fd, data)
    finally:
        os.close(fd)


def write_owner_only(path: str | Path, text: str) -> None:
    """Write a text file readable by its owner only (0600 from creation)."""
    _write_private(Path(path), text.encode())


def private_dir(path: str | Path) -> Path:
    """Create ``path`` (and missing parents) and make it owner-only (0700)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.chmod(0o700)  # mkdir's mode is filtered by the umask, and an existing folder keeps its own
    return path


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def make_tls_certificates(
    directory: str | Path,
    *,
    hosts: tuple[str, ...] = ("127.0.0.1", "::1", "localhost"),
    days: int = 30,
) -> TlsFiles:
    """Write a fresh CA and a SuperLink certificate for ``hosts`` into ``directory``.

    IP literals in ``hosts`` become ``IPAddress`` subjectAltNames, the rest ``DNSName``s.
    """
    files = TlsFiles(Path(directory))
    private_dir(files.directory)
    now = _dt.datetime.now(_dt.timezone.utc) - _dt.timedelta(minutes=5)
    until = now + _dt.timedelta(days=days)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "signguard-flwr deployment CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                key_encipherment=False, data_encipherment=False, key_agreement=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    server_key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )

    files.ca_cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    _write_private(files.ca_key, _key_pem(ca_key))
    files.server_cert.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    _write_private(files.server_key, _key_pem(server_key))
    return files


def make_supernode_keys(directory: str | Path, name: str) -> tuple[Path, Path]:
    """Write an EC P-384 key pair ``<name>`` / ``<name>.pub`` (OpenSSH format); return the paths."""
    directory = private_dir(directory)
    key = ec.generate_private_key(ec.SECP384R1())
    private = directory / name
    public = directory / f"{name}.pub"
    _write_private(
        private,
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        ),
    )
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        + f" signguard-flwr-{name}\n".encode()
    )
    return private, public
