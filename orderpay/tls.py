"""The one certificate-verifying TLS context every outgoing HTTP client of a process shares."""

from __future__ import annotations

import functools
import ssl


@functools.cache
def tls_context() -> ssl.SSLContext:
    """Built once per process: loading the CA bundle costs about 30 ms, which an httpx client
    made without it pays each time. httpx's default: certifi's CAs, or SSL_CERT_FILE /
    SSL_CERT_DIR when set. A forked child inherits it."""
    import httpx

    return httpx.create_ssl_context(verify=True)
