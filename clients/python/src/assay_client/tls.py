"""TLS for the client's channels, from PEM files (the ASSAY_TLS_CA / ASSAY_TLS_CERT /
ASSAY_TLS_KEY files Assay's own services use)."""

from __future__ import annotations

import os
from pathlib import Path

import grpc

__all__ = ["tls_credentials"]


def tls_credentials(
    ca: str | os.PathLike[str],
    cert: str | os.PathLike[str] = "",
    key: str | os.PathLike[str] = "",
) -> grpc.ChannelCredentials:
    """Channel credentials that trust the CA certificate in ``ca``; with ``cert`` and
    ``key`` (a certificate chain and its private key), the client also proves who it is
    (mutual TLS). Pass them to ``AssayClient(credentials=...)``."""
    root = Path(ca).read_bytes()
    if cert and key:
        return grpc.ssl_channel_credentials(
            root_certificates=root,
            private_key=Path(key).read_bytes(),
            certificate_chain=Path(cert).read_bytes(),
        )
    return grpc.ssl_channel_credentials(root_certificates=root)
