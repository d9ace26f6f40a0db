"""The one certificate-verifying TLS context every outgoing HTTP client of a process shares."""

from __future__ import annotations

import functools
import ssl


@functools.cache
def tls_context() -> ssl.SSLContext:
    """Built once per process: loading the CA bundle is slow, and an httpx client made without
    it loads it again each time. httpx's default: certifi's CAs, or SSL_CERT_FILE /
    SSL_CERT_DIR when set. A forked child inherits it."""
    import httpx

    return httpx.create_ssl_context(verify=True)
