"""Throwaway TLS material for the emulator's HTTPS mode.

A client must verify TLS for real (not ``verify=False``) for a test of its ``verify`` extra to
mean anything, so the emulator mints a private CA and a server certificate signed by it, the way
``trustme`` and ``mkcert`` do. A separate CA (rather than one self-signed leaf) keeps the chain
valid under OpenSSL's strict X.509 checks, which Python 3.13+ enables by default.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

if TYPE_CHECKING:
    import os

_DEFAULT_HOSTS = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class TLSFiles:
    """Paths of the PEM files written by :func:`create_certificates`.

    :param ca_bundle: the CA certificate; pass it as requests' ``verify=`` or to
        ``ssl.create_default_context(cafile=...)``.
    :param cert: the server certificate followed by the CA certificate.
    :param key: the server's private key (unencrypted).
    """

    ca_bundle: str
    cert: str
    key: str


def _san_entry(host: str) -> x509.GeneralName:
    """An IP address SAN for literal addresses, a DNS one otherwise."""
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    not_before: datetime.datetime,
    not_after: datetime.datetime,
    *,
    ca: bool,
) -> x509.CertificateBuilder:
    """The fields the CA and the server certificate share; only a CA may sign certificates."""
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def create_certificates(directory: str | os.PathLike[str], hosts: tuple[str, ...] = ()) -> TLSFiles:
    """Write a CA and a server certificate for ``localhost``, ``127.0.0.1``, ``::1`` and ``hosts``.

    EC P-256 keys: generated in milliseconds, so every emulator start can afford fresh ones.
    Valid from an hour ago (clock skew) for one day.

    :param directory: where to write ``ca.pem``, ``server.pem`` and ``server-key.pem``.
    :param hosts: extra names or addresses the server certificate must cover.
    """
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    not_before, not_after = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=1)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "GetImage.io emulator test CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        _builder(ca_name, ca_name, ca_key.public_key(), not_before, not_after, ca=True)
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    names: list[str] = []
    for host in (*_DEFAULT_HOSTS, *hosts):
        if host and host not in names and host not in ("0.0.0.0", "::"):
            names.append(host)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    server_cert = (
        _builder(server_name, ca_name, server_key.public_key(), not_before, not_after, ca=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([_san_entry(name) for name in names]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(server_key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM)
    files = TLSFiles(
        ca_bundle=str(folder / "ca.pem"),
        cert=str(folder / "server.pem"),
        key=str(folder / "server-key.pem"),
    )
    Path(files.ca_bundle).write_bytes(ca_pem)
    Path(files.cert).write_bytes(server_cert.public_bytes(serialization.Encoding.PEM) + ca_pem)
    key_path = Path(files.key)
    key_path.touch(mode=0o600, exist_ok=True)
    key_path.write_bytes(_pem_key(server_key))
    return files


def server_ssl_context(files: TLSFiles) -> ssl.SSLContext:
    """Server-side context for ``files``, TLS 1.2 or newer."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(files.cert, files.key)
    return context
