"""The initiator's SecurityCredential for M-Pesa's reversal, B2C and Transaction Status calls:
the initiator's password encrypted with Safaricom's public certificate (RSA, PKCS #1 v1.5),
base64. `cryptography` does the RSA; it is imported only when refunds are configured."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import TYPE_CHECKING

from orderpay.errors import ConfigurationError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey


def load_certificate(path: str) -> bytes:
    """The PEM (or DER) certificate's bytes, checked to hold an RSA public key;
    ConfigurationError naming MPESA_CERTIFICATE otherwise."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise ConfigurationError(
            f"MPESA_CERTIFICATE: cannot read {path} ({error.strerror or error})"
        ) from None
    _public_key(data)
    return data


def security_credential(certificate: bytes, password: str) -> str:
    """base64(RSA-PKCS1v15(password)) with the certificate's public key."""
    from cryptography.hazmat.primitives.asymmetric import padding

    encrypted = _public_key(certificate).encrypt(password.encode(), padding.PKCS1v15())
    return base64.b64encode(encrypted).decode()


def _public_key(data: bytes) -> RSAPublicKey:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import rsa

    try:
        loaded = (
            x509.load_pem_x509_certificate(data)
            if b"-----BEGIN" in data
            else x509.load_der_x509_certificate(data)
        )
    except ValueError:
        raise ConfigurationError(
            "MPESA_CERTIFICATE is not a certificate (PEM or DER): use the one Safaricom's "
            "portal gives for the sandbox or production"
        ) from None
    key = loaded.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise ConfigurationError("MPESA_CERTIFICATE does not hold an RSA key")
    return key
