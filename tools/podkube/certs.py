"""The runner as cert-manager: a CA of its own, and each rendered Certificate issued into its
Secret (``tls.crt``, ``tls.key``, ``ca.crt``), as a CA Issuer would.

Each certificate gets the Certificate's dnsNames, usages and key algorithm (ECDSA P-256),
plus — the one addition, as in the address book — IP SANs for the loopback addresses its
pods and Service are reached at here (clients dial ``127.0.x.y``, not ``archive``). A
Secret volume is written the way the kubelet writes one (files are links through ``..data``
to a timestamped directory, swapped with one rename), so a renewal is seen all at once.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tools.podkube.render import Manifest

USAGES = {
    "server auth": ExtendedKeyUsageOID.SERVER_AUTH,
    "client auth": ExtendedKeyUsageOID.CLIENT_AUTH,
}


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@dataclass
class Authority:
    """A self-signed CA, standing in for the CA Issuer the operator names."""

    key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )

    def __post_init__(self) -> None:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "prodshape test CA")])
        now = dt.datetime.now(dt.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.pem = self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(
        self, common_name: str, dns: list[str], ips: list[str], usages: list[str]
    ) -> tuple[bytes, bytes, int]:
        """(certificate PEM, key PEM, serial) for a new key."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(hours=12))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([USAGES[u] for u in usages if u in USAGES]), critical=False
            )
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key), cert.serial_number

    def secret(self, certificate: Manifest, ips: list[str]) -> tuple[Manifest, int]:
        """The Secret a Certificate's issuance writes, and the certificate's serial."""
        spec = certificate["spec"]
        name = spec.get("commonName") or spec.get("dnsNames", [certificate["metadata"]["name"]])[0]
        cert, key, serial = self.issue(name, spec.get("dnsNames", []), ips, spec["usages"])
        data = {"tls.crt": cert, "tls.key": key, "ca.crt": self.pem}
        secret = {
            "kind": "Secret",
            "type": "kubernetes.io/tls",
            "metadata": {"name": spec["secretName"]},
            "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
        }
        return secret, serial


_WRITING = threading.Lock()
"""Replicas of one Deployment start together and share their volume directories."""


def write_atomically(directory: Path, files: dict[str, str], owner: int | None) -> None:
    """The kubelet's atomic writer: ``..<stamp>/`` holds the files, ``..data`` links to it,
    each name links through ``..data``; an update is one rename of ``..data``."""
    with _WRITING:
        _write(directory, files, owner)


def _write(directory: Path, files: dict[str, str], owner: int | None) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    stamp = directory / f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.{time.monotonic_ns()}"
    stamp.mkdir()
    for name, text in files.items():
        target = stamp / name
        target.write_text(text)
        target.chmod(0o644)
        if owner is not None and os.geteuid() == 0:
            os.chown(target, 0, owner)  # as the kubelet does: group fsGroup, 0640
            target.chmod(0o640)
    stamp.chmod(0o755)
    staged = directory / "..data_tmp"
    staged.unlink(missing_ok=True)
    staged.symlink_to(stamp.name)
    previous = (directory / "..data").resolve() if (directory / "..data").exists() else None
    os.replace(staged, directory / "..data")
    for name in files:
        link = directory / name
        if not link.is_symlink():
            link.unlink(missing_ok=True)
            link.symlink_to(f"..data/{name}")
    if previous is not None and previous != stamp:
        for old in previous.iterdir():
            old.unlink()
        previous.rmdir()
    directory.chmod(0o755)


def serial_of(pem: bytes) -> int:
    """A PEM certificate's serial number."""
    return int(x509.load_pem_x509_certificate(pem).serial_number)
